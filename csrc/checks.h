// Input checks shared by every backend's glue, written once and naming the argument.
// cprl_fast/checks.py mirrors them for the fake (meta) kernels; keep the messages equal.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/MemoryOverlap.h>

#include <string>

#include "core/common.h"
#include "core/intervene.h"

namespace cprl_fast {

// The dtypes every op takes: float16, bfloat16, float32, float64.
#define CPRL_DISPATCH_FLOATING(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

// A dtype as Python prints it ("torch.float32"), so that these messages equal the Python
// twins' (cprl_fast/checks.py) word for word.
inline std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kInt: return "torch.int32";
    case at::kLong: return "torch.int64";
    case at::kShort: return "torch.int16";
    case at::kChar: return "torch.int8";
    case at::kByte: return "torch.uint8";
    case at::kBool: return "torch.bool";
    case at::kComplexFloat: return "torch.complex64";
    case at::kComplexDouble: return "torch.complex128";
    default: return std::string("torch.") + c10::toString(t);
  }
}

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

inline void check_float(const at::Tensor& x, const char* name) {
  TORCH_CHECK_TYPE(is_supported_float(x.scalar_type()), name,
                   " must be float16, bfloat16, float32 or float64, got ", dtype_name(x.scalar_type()));
}

// A feature map [N, C, H, W] with C, H, W >= 1 and a supported floating dtype.
inline void check_feature(const at::Tensor& x, const char* name) {
  TORCH_CHECK_VALUE(x.dim() == 4, name, " must have shape [N, C, H, W], got a ", x.dim(),
                    "-d tensor of shape ", x.sizes());
  TORCH_CHECK_VALUE(x.size(1) >= 1 && x.size(2) >= 1 && x.size(3) >= 1, name,
                    " must have C, H, W >= 1, got shape ", x.sizes());
  check_float(x, name);
}

inline void check_same_device(const at::Tensor& a, const char* an, const at::Tensor& b,
                              const char* bn) {
  TORCH_CHECK_VALUE(a.device() == b.device(), bn, " must be on the same device as ", an,
                    " (", a.device(), "), got ", b.device());
}

inline void check_same_shape(const at::Tensor& a, const char* an, const at::Tensor& b,
                             const char* bn) {
  TORCH_CHECK_VALUE(a.sizes() == b.sizes(), bn, " must have the shape of ", an, " ",
                    a.sizes(), ", got ", b.sizes());
}

inline void check_same_dtype(const at::Tensor& a, const char* an, const at::Tensor& b,
                             const char* bn) {
  TORCH_CHECK_TYPE(a.scalar_type() == b.scalar_type(), bn, " must have the dtype of ", an,
                   " (", dtype_name(a.scalar_type()), "), got ", dtype_name(b.scalar_type()));
}

// The per-channel mask [N, C] that goes with feature map f.
inline void check_mask(const at::Tensor& f, const at::Tensor& mask, const char* name) {
  TORCH_CHECK_VALUE(mask.dim() == 2 && mask.size(0) == f.size(0) && mask.size(1) == f.size(1),
                    name, " must have shape [N, C] = [", f.size(0), ", ", f.size(1),
                    "], got ", mask.sizes());
  check_float(mask, name);
  check_same_device(f, "f", mask, name);
}

// b: the learnable offset, a floating tensor with exactly one element.
inline void check_offset(const at::Tensor& f, const at::Tensor& b) {
  TORCH_CHECK_VALUE(b.numel() == 1, "b must be a tensor with one element, got shape ", b.sizes());
  check_float(b, "b");
  check_same_device(f, "f", b, "b");
}

inline void check_rank_mask_args(const at::Tensor& f, const at::Tensor& b, double temperature,
                                 bool soft, double tau) {
  check_feature(f, "f");
  check_offset(f, b);
  TORCH_CHECK_VALUE(temperature > 0 && std::isfinite(temperature),
                    "temperature must be a positive finite number, got ", temperature);
  if (soft) {
    TORCH_CHECK_VALUE(tau > 0 && std::isfinite(tau),
                      "tau must be a positive finite number for the soft rank, got ", tau);
  }
}

inline cprl::InterveneMode parse_intervene_mode(c10::string_view mode) {
  if (mode == "sf") return cprl::InterveneMode::kSF;
  if (mode == "nc") return cprl::InterveneMode::kNC;
  TORCH_CHECK_VALUE(false, "mode must be 'sf' or 'nc', got '", std::string(mode), "'");
  return cprl::InterveneMode::kSF;
}

inline void check_intervene_args(const at::Tensor& f, const at::Tensor& t,
                                 const at::Tensor& mask) {
  check_feature(f, "f");
  check_same_device(f, "f", t, "t");
  check_same_shape(f, "f", t, "t");
  check_same_dtype(f, "f", t, "t");
  check_mask(f, mask, "mask");
}

inline void check_attack_step_args(const at::Tensor& x, const at::Tensor& grad,
                                   const at::Tensor& x0, double alpha, double eps, double lo,
                                   double hi) {
  check_float(x, "x");
  check_same_device(x, "x", grad, "grad");
  check_same_device(x, "x", x0, "x0");
  check_same_shape(x, "x", grad, "grad");
  check_same_shape(x, "x", x0, "x0");
  check_same_dtype(x, "x", grad, "grad");
  check_same_dtype(x, "x", x0, "x0");
  TORCH_CHECK_VALUE(std::isfinite(alpha), "alpha must be finite, got ", alpha);
  TORCH_CHECK_VALUE(eps >= 0 && std::isfinite(eps), "eps must be finite and >= 0, got ", eps);
  TORCH_CHECK_VALUE(lo <= hi, "lo must be <= hi, got lo=", lo, " hi=", hi);
}

// grad: the incoming gradient of an op output shaped like f.
inline void check_output_grad(const at::Tensor& f, const at::Tensor& grad, const char* name) {
  check_same_shape(f, "f", grad, name);
  check_same_dtype(f, "f", grad, name);
  check_same_device(f, "f", grad, name);
}

// An optional [N, C] gradient of the mask, checked and converted to the op-math dtype;
// undefined when absent.
inline at::Tensor optional_mask_grad(const at::Tensor& f, const std::optional<at::Tensor>& g,
                                     at::ScalarType acc_type) {
  if (!g.has_value() || !g->defined()) return at::Tensor();
  check_mask(f, *g, "grad_mask");
  return g->to(acc_type).contiguous();
}

// out: the same device, shape and dtype as x, no element written twice, and sharing memory
// with an input only exactly (out may be x, grad or x0 itself: each element is read before it
// is written), never in part, as torch's out= ops require.
inline void check_out(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& x0,
                      const at::Tensor& out) {
  check_same_device(x, "x", out, "out");
  check_same_shape(x, "x", out, "out");
  check_same_dtype(x, "x", out, "out");
  at::assert_no_internal_overlap(out);
  for (const at::Tensor* input : {&x, &grad, &x0}) at::assert_no_partial_overlap(out, *input);
}

// The dense memory format a kernel works in and its outputs have: channels_last when x is a
// dense channels_last tensor (and not also contiguous), contiguous otherwise (any other stride
// pattern is copied). cprl_fast/checks.py:dense_format is the same rule for fake kernels.
inline at::MemoryFormat dense_format(const at::Tensor& x) {
  return x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast)
             ? at::MemoryFormat::ChannelsLast
             : at::MemoryFormat::Contiguous;
}

inline cprl::Layout choose_layout(const at::Tensor& f) {
  return dense_format(f) == at::MemoryFormat::ChannelsLast ? cprl::Layout::kNHWC
                                                           : cprl::Layout::kNCHW;
}

inline at::Tensor dense(const at::Tensor& x, cprl::Layout layout) {
  return layout == cprl::Layout::kNHWC ? x.contiguous(at::MemoryFormat::ChannelsLast)
                                       : x.contiguous();
}

inline cprl::NCHWSizes sizes_of(const at::Tensor& f, cprl::Layout layout) {
  return cprl::NCHWSizes{f.size(0), f.size(1), f.size(2) * f.size(3), layout};
}

// dtype of the mask and of all per-channel arithmetic: float64 for float64 features,
// float32 otherwise (the op-math type).
inline at::ScalarType acc_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace cprl_fast
