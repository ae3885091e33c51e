// Autograd of the native ops in C++ (the pattern of torchvision's ops/autograd kernels): the
// forward and backward ops are called through the dispatcher below the autograd key, so one
// registration serves the CPU and CUDA kernels, the fake kernels under torch.compile, and
// every other key. Doing it here rather than from Python (torch.library.register_autograd)
// takes the Python autograd.Function off every call: a CA activation's forward + backward
// costs about as much host time as nn.ReLU's (bench/host_overhead.py). The Triton ops
// (torch.ops.cprl_fast.<op>_triton) keep their Python autograd (cprl_fast/ops/_backend.py).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>

namespace cprl_fast {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The typed handle of op ``name`` (each caller keeps it in a function-local static).
template <typename Signature>
c10::TypedOperatorHandle<Signature> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

using RankMaskSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                       double, bool, double);
using RankMaskBackwardSig = std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor&, const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, double, bool, double);
using InterveneSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                c10::string_view);
using InterveneBackwardSig = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    c10::string_view);

// Saves f, mask (an output) and b; grad_mask stays undefined when nothing used the mask, and the
// backward op then skips its term (an undefined grad_y is read as zeros).
class RankMaskFunction : public torch::autograd::Function<RankMaskFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& f, const at::Tensor& b,
                               double temperature, bool soft, double tau) {
    static const auto op = op_handle<RankMaskSig>("cprl_fast::rank_mask");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, mask] = op.call(f, b, temperature, soft, tau);
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({f, mask, b});
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["soft"] = soft;
    ctx->saved_data["tau"] = tau;
    return {y, mask};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = op_handle<RankMaskBackwardSig>("cprl_fast::rank_mask_backward");
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& f = saved[0];
    at::Tensor grad_y = grads[0].defined() ? grads[0] : at::zeros_like(f);
    std::optional<at::Tensor> grad_mask;
    if (grads[1].defined()) grad_mask = grads[1];
    auto [grad_f, grad_b] =
        op.call(grad_y, grad_mask, f, saved[1], saved[2], ctx->saved_data["temperature"].toDouble(),
                ctx->saved_data["soft"].toBool(), ctx->saved_data["tau"].toDouble());
    return {grad_f, grad_b, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Saves the inputs; the backward op recomputes the ReLU gate.
class InterveneFunction : public torch::autograd::Function<InterveneFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& f, const at::Tensor& t,
                               const at::Tensor& mask, c10::string_view mode) {
    static const auto op = op_handle<InterveneSig>("cprl_fast::intervene");
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor out = op.call(f, t, mask, mode);
    ctx->save_for_backward({f, t, mask});
    ctx->saved_data["mode"] = std::string(mode);
    return {out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = op_handle<InterveneBackwardSig>("cprl_fast::intervene_backward");
    const auto saved = ctx->get_saved_variables();
    const std::string mode = ctx->saved_data["mode"].toStringRef();
    auto [grad_f, grad_t, grad_mask] = op.call(grads[0], saved[0], saved[1], saved[2], mode);
    return {grad_f, grad_t, grad_mask, at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> rank_mask_autograd(const at::Tensor& f, const at::Tensor& b,
                                                      double temperature, bool soft,
                                                      double tau) {
  auto out = RankMaskFunction::apply(f, b, temperature, soft, tau);
  return {out[0], out[1]};
}

at::Tensor intervene_autograd(const at::Tensor& f, const at::Tensor& t, const at::Tensor& mask,
                              c10::string_view mode) {
  return InterveneFunction::apply(f, t, mask, mode)[0];
}

}  // namespace

TORCH_LIBRARY_IMPL(cprl_fast, Autograd, m) {
  m.impl("rank_mask", &rank_mask_autograd);
  m.impl("intervene", &intervene_autograd);
}

}  // namespace cprl_fast
