// The one place the cprl_fast operator schemas are declared. Each backend registers its
// kernels in its own file (cpu/*_cpu.cpp, cuda/*_cuda.cu) with TORCH_LIBRARY_IMPL, autograd is
// registered in autograd.cpp, and the fake (meta) kernels from Python (cprl_fast/ops/).
#include <torch/library.h>

// The Python module that loads these registrations is csrc/python_module.cpp.
namespace cprl_fast {

bool cuda_built() {
#ifdef CPRL_FAST_WITH_CUDA
  return true;
#else
  return false;
#endif
}

TORCH_LIBRARY(cprl_fast, m) {
  m.def("rank_mask(Tensor f, Tensor b, float temperature, bool soft, float tau) -> (Tensor, Tensor)");
  // rank_mask's y alone (the CA activation's normal mode; autograd.cpp): no kernels of its own
  m.def("ca_activation(Tensor f, Tensor b, float temperature, bool soft, float tau) -> Tensor");
  m.def(
      "rank_mask_backward(Tensor grad_y, Tensor? grad_mask, Tensor f, Tensor mask, Tensor b, "
      "float temperature, bool soft, float tau) -> (Tensor, Tensor)");
  // The backward under create_graph (autograd.cpp): the reference's gradient in differentiable
  // ops, registered from Python (CompositeImplicitAutograd: cprl_fast/ops/rank_mask.py)
  m.def(
      "rank_mask_vjp(Tensor grad_y, Tensor? grad_mask, Tensor f, Tensor b, float temperature, "
      "bool soft, float tau) -> (Tensor, Tensor)");
  m.def("intervene(Tensor f, Tensor t, Tensor mask, str mode) -> Tensor");
  m.def(
      "intervene_backward(Tensor grad, Tensor f, Tensor t, Tensor mask, str mode) -> "
      "(Tensor, Tensor, Tensor)");
  m.def(
      "intervene_vjp(Tensor grad, Tensor f, Tensor t, Tensor mask, str mode) -> "
      "(Tensor, Tensor, Tensor)");
  m.def(
      "attack_step(Tensor x, Tensor grad, Tensor x0, float alpha, float eps, float lo, "
      "float hi) -> Tensor");
  m.def(
      "attack_step_out(Tensor x, Tensor grad, Tensor x0, float alpha, float eps, float lo, "
      "float hi, Tensor(a!) out) -> ()");
  m.def("cuda_built() -> bool", &cuda_built);
}

}  // namespace cprl_fast
