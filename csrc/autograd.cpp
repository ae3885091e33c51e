// Autograd of the native ops in C++, written the way PyTorch's generated autograd is
// (torch/csrc/autograd/generated/VariableType*.cpp): a Node subclass per op that holds the saved
// tensors as SavedVariable members and the scalar settings as plain fields, created only when an
// input requires grad, wired with collect_next_edges / set_history. The forward and backward ops
// are called through the dispatcher below the autograd key, so one registration serves the CPU
// and CUDA kernels, the fake kernels under torch.compile, and every other key.
//
// Why not torch::autograd::Function (the pattern of torchvision's ops, and this file's first
// version): its generic apply (input and output info, the saved-data dictionary, output
// wrapping) made a CA activation's forward + backward cost about 1.8x nn.ReLU's host time on
// small tensors; a Node of its own brings it to about the cost of a builtin two-input op
// (bench/host_overhead.py, docs/benchmarks.md). Forward-mode AD is refused, as the Function
// refused it. The Triton ops (torch.ops.cprl_fast.<op>_triton) keep their Python autograd
// (cprl_fast/ops/_backend.py).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>
#include <torch/version.h>

#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <utility>

namespace cprl_fast {
namespace {

using torch::autograd::Node;
using torch::autograd::SavedVariable;
using torch::autograd::variable_list;

// Nodes are held by std::shared_ptr up to torch 2.12 and by c10::intrusive_ptr from 2.13 on
// (the GPU machine has 2.11, this project's VM 2.14).
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 13)
template <typename T>
c10::intrusive_ptr<T> make_node() {
  return c10::make_intrusive<T>();
}
#else
template <typename T>
std::shared_ptr<T> make_node() {
  return std::shared_ptr<T>(new T(), torch::autograd::deleteNode);
}
#endif

// The typed handle of op ``name`` (each caller keeps it in a function-local static).
template <typename Signature>
c10::TypedOperatorHandle<Signature> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

template <typename... Tensors>
void refuse_forward_ad(const char* op, const Tensors&... tensors) {
  TORCH_CHECK(!(torch::autograd::isFwGradDefined(tensors) || ...), "cprl_fast::", op,
              ": forward-mode AD is not supported");
}

// A plain backward (grad mode off) calls the fused backward op below the autograd keys: the
// backward ops have no autograd, and going through autograd's boxed fallback for them costs host
// time on every call. Under create_graph (grad mode on: double backpropagation, torch.func's
// transforms) the gradient must be differentiable again: the node calls cprl_fast::<op>_vjp
// instead, the reference's gradient written out in ATen ops (cprl_fast/reference/, registered
// from Python as CompositeImplicitAutograd), which autograd and functorch see through. Through
// the fallback, a second-order gradient came out as zeros with a warning.
template <typename Fused, typename Differentiable>
auto fused_unless_create_graph(Fused fused, Differentiable differentiable) {
  if (at::GradMode::is_enabled()) return differentiable();
  at::AutoDispatchBelowADInplaceOrView guard;
  return fused();
}

using RankMaskSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                       double, bool, double);
using RankMaskBackwardSig = std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor&, const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, double, bool, double);
using RankMaskVjpSig = std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor&, const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&,
    double, bool, double);
using InterveneSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                c10::string_view);
using InterveneBackwardSig = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    c10::string_view);

// Inputs (f, b), outputs (y, mask) for rank_mask, y alone for ca_activation. Saves f, b and mask
// (an output of rank_mask only). A gradient the engine passes undefined is an output nothing
// used: an undefined grad_y is read as zeros, and an undefined or absent grad_mask makes the
// backward op skip its term.
struct RankMaskBackward : public Node {
  variable_list apply(variable_list&& grads) override {
    static const auto op = op_handle<RankMaskBackwardSig>("cprl_fast::rank_mask_backward");
    static const auto vjp = op_handle<RankMaskVjpSig>("cprl_fast::rank_mask_vjp");
    std::lock_guard<std::mutex> lock(mutex_);
    const at::Tensor f = f_.unpack();
    const at::Tensor mask = mask_.unpack(getptr());
    const at::Tensor b = b_.unpack();
    const at::Tensor grad_y = grads[0].defined() ? grads[0] : at::zeros_like(f);
    std::optional<at::Tensor> grad_mask;  // ca_activation has no mask output: one grad
    if (grads.size() > 1 && grads[1].defined()) grad_mask = grads[1];
    auto [grad_f, grad_b] = fused_unless_create_graph(
        [&] { return op.call(grad_y, grad_mask, f, mask, b, temperature, soft, tau); },
        [&] { return vjp.call(grad_y, grad_mask, f, b, temperature, soft, tau); });
    variable_list out(2);
    if (task_should_compute_output(0)) out[0] = std::move(grad_f);
    if (task_should_compute_output(1)) out[1] = std::move(grad_b);
    return out;
  }
  std::string name() const override { return "RankMaskBackward"; }
  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    f_.reset_data();
    mask_.reset_data();
    b_.reset_data();
  }

  SavedVariable f_, mask_, b_;
  double temperature = 1.0, tau = 0.0;
  bool soft = false;
};

// Inputs (f, t, mask), output out. Saves the inputs; the backward op recomputes the ReLU gate.
struct InterveneBackward : public Node {
  variable_list apply(variable_list&& grads) override {
    static const auto op = op_handle<InterveneBackwardSig>("cprl_fast::intervene_backward");
    static const auto vjp = op_handle<InterveneBackwardSig>("cprl_fast::intervene_vjp");
    std::lock_guard<std::mutex> lock(mutex_);
    if (!grads[0].defined()) return variable_list(3);
    const at::Tensor f = f_.unpack(), t = t_.unpack(), mask = mask_.unpack();
    auto [grad_f, grad_t, grad_mask] = fused_unless_create_graph(
        [&] { return op.call(grads[0], f, t, mask, mode); },
        [&] { return vjp.call(grads[0], f, t, mask, mode); });
    variable_list out(3);
    if (task_should_compute_output(0)) out[0] = std::move(grad_f);
    if (task_should_compute_output(1)) out[1] = std::move(grad_t);
    if (task_should_compute_output(2)) out[2] = std::move(grad_mask);
    return out;
  }
  std::string name() const override { return "InterveneBackward"; }
  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    f_.reset_data();
    t_.reset_data();
    mask_.reset_data();
  }

  SavedVariable f_, t_, mask_;
  std::string mode;
};

// rank_mask below the autograd keys, and its node when f or b requires grad. mask_is_output:
// rank_mask returns the mask (it gets the node's history and is saved as an output);
// ca_activation keeps it for the backward only.
std::tuple<at::Tensor, at::Tensor> rank_mask_with_node(const char* name, const at::Tensor& f,
                                                       const at::Tensor& b, double temperature,
                                                       bool soft, double tau,
                                                       bool mask_is_output) {
  static const auto op = op_handle<RankMaskSig>("cprl_fast::rank_mask");
  refuse_forward_ad(name, f, b);
  const bool requires_grad = torch::autograd::compute_requires_grad(f, b);
  auto [y, mask] = [&] {
    at::AutoDispatchBelowADInplaceOrView guard;
    return op.call(f, b, temperature, soft, tau);
  }();
  if (requires_grad) {
    auto node = make_node<RankMaskBackward>();
    node->set_next_edges(torch::autograd::collect_next_edges(f, b));
    node->temperature = temperature;
    node->soft = soft;
    node->tau = tau;
    node->f_ = SavedVariable(f, false);
    node->b_ = SavedVariable(b, false);
    torch::autograd::set_history(y, node);
    if (mask_is_output) torch::autograd::set_history(mask, node);
    node->mask_ = SavedVariable(mask, mask_is_output);
  }
  return {std::move(y), std::move(mask)};
}

std::tuple<at::Tensor, at::Tensor> rank_mask_autograd(const at::Tensor& f, const at::Tensor& b,
                                                      double temperature, bool soft,
                                                      double tau) {
  return rank_mask_with_node("rank_mask", f, b, temperature, soft, tau, true);
}

// rank_mask's y alone: the CA activation in its normal mode, what a CPRLActivation calls on every
// forward. The same kernels and the same node; without the second output, a call costs less host
// time (bench/host_overhead.py). The mask is saved, not returned.
at::Tensor ca_activation_autograd(const at::Tensor& f, const at::Tensor& b, double temperature,
                                  bool soft, double tau) {
  return std::get<0>(rank_mask_with_node("ca_activation", f, b, temperature, soft, tau, false));
}

// Below the autograd keys (inference mode, the fake kernels of torch.compile): rank_mask's y.
at::Tensor ca_activation_composite(const at::Tensor& f, const at::Tensor& b, double temperature,
                                   bool soft, double tau) {
  static const auto op = op_handle<RankMaskSig>("cprl_fast::rank_mask");
  return std::get<0>(op.call(f, b, temperature, soft, tau));
}

at::Tensor intervene_autograd(const at::Tensor& f, const at::Tensor& t, const at::Tensor& mask,
                              c10::string_view mode) {
  static const auto op = op_handle<InterveneSig>("cprl_fast::intervene");
  refuse_forward_ad("intervene", f, t, mask);
  const bool requires_grad = torch::autograd::compute_requires_grad(f, t, mask);
  at::Tensor out = [&] {
    at::AutoDispatchBelowADInplaceOrView guard;
    return op.call(f, t, mask, mode);
  }();
  if (requires_grad) {
    auto node = make_node<InterveneBackward>();
    node->set_next_edges(torch::autograd::collect_next_edges(f, t, mask));
    node->mode = std::string(mode);
    node->f_ = SavedVariable(f, false);
    node->t_ = SavedVariable(t, false);
    node->mask_ = SavedVariable(mask, false);
    torch::autograd::set_history(out, node);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(cprl_fast, Autograd, m) {
  m.impl("rank_mask", &rank_mask_autograd);
  m.impl("ca_activation", &ca_activation_autograd);
  m.impl("intervene", &intervene_autograd);
}

TORCH_LIBRARY_IMPL(cprl_fast, CompositeExplicitAutograd, m) {
  m.impl("ca_activation", &ca_activation_composite);
}

}  // namespace cprl_fast
