// The cprl_fast._C module: importing it runs the static TORCH_LIBRARY registrations of the other
// files (ops.cpp: schemas; cpu/, cuda/: kernels; autograd.cpp), and it holds two Python functions
// and an attribute.
//
// _C.cpu_huge_pages() says whether the CPU kernels advise their large outputs for huge pages
// (csrc/cpu/huge_pages.h: CPRL_FAST_HUGE_PAGES=1, read once), so that Python reads the rule from
// the extension rather than repeating it.
//
// _C.torch_version is the torch release ("2.14.1") whose headers it was built against: the package
// compares it with the torch it runs with (an extension built for another release may load and
// then misread torch's structures).
//
// _C.ca_activation(f, b, temperature, soft, tau) calls cprl_fast::ca_activation through a typed
// handle: the same op, dispatcher and autograd as torch.ops.cprl_fast.ca_activation, without the
// boxed call path of torch.ops (argument conversion to IValues by schema, the boxed kernel
// wrapper, the result's conversion back), which costs a CPRLActivation about 1 microsecond
// per call (bench/host_overhead.py). It is what a CPRLActivation calls on the native backend
// in its normal mode. Anything else goes to torch.ops unchanged: an argument that is not a plain
// tensor (a subclass, which may define __torch_function__), an active torch function mode,
// arguments of other Python types. Under torch.compile, dynamo traces the torch.ops op instead
// (cprl_fast/ops/_backend.py registers it with torch.compiler.substitute_in_graph).
#include <Python.h>
#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>

#include <torch/version.h>

#include "cpu/huge_pages.h"

#define CPRL_FAST_STR_(x) #x
#define CPRL_FAST_STR(x) CPRL_FAST_STR_(x)

namespace cprl_fast {
namespace {

// torch.ops.cprl_fast.ca_activation.default, looked up on the first call that needs it (with the
// GIL held) and kept for the process; nullptr with the Python error set if the lookup fails.
PyObject* torch_ops_overload() {
  static PyObject* overload = nullptr;
  if (overload != nullptr) return overload;
  PyObject* obj = PyImport_ImportModule("torch");
  for (const char* name : {"ops", "cprl_fast", "ca_activation", "default"}) {
    if (obj == nullptr) return nullptr;
    PyObject* next = PyObject_GetAttrString(obj, name);
    Py_DECREF(obj);
    obj = next;
  }
  overload = obj;
  return overload;
}

PyObject* ca_activation(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  if (nargs != 5 || !THPVariable_CheckExact(args[0]) || !THPVariable_CheckExact(args[1]) ||
      !PyFloat_CheckExact(args[2]) || !PyBool_Check(args[3]) || !PyFloat_CheckExact(args[4]) ||
      at::impl::torch_function_mode_enabled()) {
    PyObject* overload = torch_ops_overload();
    if (overload == nullptr) return nullptr;
    return PyObject_Vectorcall(overload, args, nargs, nullptr);
  }
  using Sig = at::Tensor(const at::Tensor&, const at::Tensor&, double, bool, double);
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("cprl_fast::ca_activation", "")
                             .typed<Sig>();
  const at::Tensor& f = THPVariable_Unpack(args[0]);
  const at::Tensor& b = THPVariable_Unpack(args[1]);
  const double temperature = PyFloat_AS_DOUBLE(args[2]);
  const bool soft = args[3] == Py_True;
  const double tau = PyFloat_AS_DOUBLE(args[4]);
  at::Tensor y;
  {
    pybind11::gil_scoped_release no_gil;  // as torch's own bindings: other threads may run
    y = op.call(f, b, temperature, soft, tau);
  }
  return THPVariable_Wrap(std::move(y));
  END_HANDLE_TH_ERRORS
}

PyObject* cpu_huge_pages(PyObject* /*module*/, PyObject* /*unused*/) {
  return PyBool_FromLong(cpu::huge_pages_enabled() ? 1 : 0);
}

// The torch release of the headers this file is compiled with, "MAJOR.MINOR.PATCH".
constexpr char kTorchVersion[] = CPRL_FAST_STR(TORCH_VERSION_MAJOR) "." CPRL_FAST_STR(
    TORCH_VERSION_MINOR) "." CPRL_FAST_STR(TORCH_VERSION_PATCH);

PyMethodDef methods[] = {
    {"ca_activation", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&ca_activation)),
     METH_FASTCALL,
     "ca_activation(f, b, temperature, soft, tau)\n--\n\n"
     "torch.ops.cprl_fast.ca_activation, called without torch.ops' boxed path (see "
     "csrc/python_module.cpp)."},
    {"cpu_huge_pages", &cpu_huge_pages, METH_NOARGS,
     "cpu_huge_pages()\n--\n\nWhether the CPU kernels advise large outputs for huge pages "
     "(CPRL_FAST_HUGE_PAGES=1, read once; csrc/cpu/huge_pages.h)."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace
}  // namespace cprl_fast

PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "cprl_fast native operators (see torch.ops.cprl_fast)", -1,
      cprl_fast::methods};
  PyObject* module = PyModule_Create(&module_def);
  if (module != nullptr &&
      PyModule_AddStringConstant(module, "torch_version", cprl_fast::kTorchVersion) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
