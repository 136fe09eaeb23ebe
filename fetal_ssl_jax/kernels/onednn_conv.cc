// oneDNN 2-D convolutions (forward, backward-data, backward-weights) as XLA:CPU FFI targets.
//
// Why: XLA:CPU's own convolution kernels (YNNPACK/Eigen) run a ResNet's convolutions
// 1.5-3x slower than oneDNN, the library PyTorch uses on CPU. Layouts are JAX's:
// activations NHWC, kernels HWIO, float32. Primitives are cached per geometry and are
// re-entrant (user-managed scratchpad, per-thread buffers), since XLA may run independent
// convolutions on several threads at once. The `threads` attribute (0: OpenMP's default,
// all cores) sets the OpenMP team size of the calling thread.
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <omp.h>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;
using dims = dnnl::memory::dims;

enum Kind { kFwd = 0, kBwdData = 1, kBwdWeights = 2 };

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

std::mutex g_mu;  // guards the cache only; primitives run outside it

// One cached operation: the primitive, and for each of its three tensors the
// user-layout descriptor and the primitive's, with the reorder between them where they
// differ (built once here rather than per call; oneDNN's own primitive cache already made the
// per-call build cheap, so this is tidiness, not a measured speed-up).
struct Op {
  dnnl::primitive prim;
  int arg[3];  // DNNL_ARG_* of tensors a, b, out
  dnnl::memory::desc want[3];
  dnnl::memory::desc user[3];
  dnnl::reorder convert[3];  // inputs: user -> want; output: want -> user; empty where equal
  dnnl::memory::desc scratchpad;

  // Tensor i of the call is oneDNN argument `a`, held by the caller as `u`, wanted by the primitive as `w`.
  void Set(int i, int a, const dnnl::memory::desc& w, const dnnl::memory::desc& u) {
    arg[i] = a;
    want[i] = w;
    user[i] = u;
    if (w != u) convert[i] = i < 2 ? dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), u, Engine(), w))
                                   : dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), w, Engine(), u));
  }
};

std::map<std::vector<int64_t>, std::shared_ptr<Op>>& Cache() {
  static auto* cache = new std::map<std::vector<int64_t>, std::shared_ptr<Op>>();
  return *cache;
}

// Per-thread grow-only buffers for reordered operands and the scratchpad: allocating them
// per call costs fresh pages (page faults) on every convolution.
struct Buffers {
  std::vector<std::unique_ptr<char[]>> data{4};
  std::vector<size_t> size = std::vector<size_t>(4, 0);
  void* Get(int i, size_t bytes) {
    if (bytes > size[i]) {
      data[i].reset(new char[bytes + 64]);
      size[i] = bytes;
    }
    auto p = reinterpret_cast<uintptr_t>(data[i].get());
    return reinterpret_cast<void*>((p + 63) & ~uintptr_t(63));
  }
};

// x: [N,H,W,C], w: [kh,kw,ci,co], y: [N,Ho,Wo,co] -> oneDNN's logical NCHW / OIHW dims.
std::shared_ptr<Op> MakeOp(Kind kind, const std::vector<int64_t>& x, const std::vector<int64_t>& w,
                           const std::vector<int64_t>& y, const dims& strides, const dims& pad_l,
                           const dims& pad_r) {
  dims src{x[0], x[3], x[1], x[2]}, wei{w[3], w[2], w[0], w[1]}, dst{y[0], y[3], y[1], y[2]};
  dnnl::memory::desc src_u(src, dt::f32, tag::nhwc), wei_u(wei, dt::f32, tag::hwio), dst_u(dst, dt::f32, tag::nhwc);
  // Activations stay NHWC (oneDNN's brgemm kernels run on it directly); weights may be blocked.
  dnnl::memory::desc wei_a(wei, dt::f32, tag::any);
  auto& eng = Engine();
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // re-entrant: scratch comes with each call
  dnnl::convolution_forward::primitive_desc fwd(eng, dnnl::prop_kind::forward_training,
                                                dnnl::algorithm::convolution_direct, src_u, wei_a, dst_u,
                                                strides, pad_l, pad_r, attr);
  auto op = std::make_shared<Op>();
  if (kind == kFwd) {
    op->prim = dnnl::convolution_forward(fwd);
    op->scratchpad = fwd.scratchpad_desc();
    op->Set(0, DNNL_ARG_SRC, fwd.src_desc(), src_u);
    op->Set(1, DNNL_ARG_WEIGHTS, fwd.weights_desc(), wei_u);
    op->Set(2, DNNL_ARG_DST, fwd.dst_desc(), dst_u);
  } else if (kind == kBwdData) {
    dnnl::convolution_backward_data::primitive_desc pd(eng, dnnl::algorithm::convolution_direct, src_u, wei_a,
                                                       dst_u, strides, pad_l, pad_r, fwd, attr);
    op->prim = dnnl::convolution_backward_data(pd);
    op->scratchpad = pd.scratchpad_desc();
    op->Set(0, DNNL_ARG_DIFF_DST, pd.diff_dst_desc(), dst_u);
    op->Set(1, DNNL_ARG_WEIGHTS, pd.weights_desc(), wei_u);
    op->Set(2, DNNL_ARG_DIFF_SRC, pd.diff_src_desc(), src_u);
  } else {
    dnnl::convolution_backward_weights::primitive_desc pd(eng, dnnl::algorithm::convolution_direct, src_u, wei_a,
                                                          dst_u, strides, pad_l, pad_r, fwd, attr);
    op->prim = dnnl::convolution_backward_weights(pd);
    op->scratchpad = pd.scratchpad_desc();
    op->Set(0, DNNL_ARG_SRC, pd.src_desc(), src_u);
    op->Set(1, DNNL_ARG_DIFF_DST, pd.diff_dst_desc(), dst_u);
    op->Set(2, DNNL_ARG_DIFF_WEIGHTS, pd.diff_weights_desc(), wei_u);
  }
  return op;
}

std::vector<int64_t> Dims(ffi::AnyBuffer::Dimensions d) { return std::vector<int64_t>(d.begin(), d.end()); }

std::shared_ptr<Op> GetOp(Kind kind, const std::vector<int64_t>& x, const std::vector<int64_t>& w,
                          const std::vector<int64_t>& y, int64_t sh, int64_t sw, int64_t pt, int64_t pb,
                          int64_t pl, int64_t pr) {
  std::vector<int64_t> key{kind, sh, sw, pt, pb, pl, pr};
  key.insert(key.end(), x.begin(), x.end());
  key.insert(key.end(), w.begin(), w.end());
  key.insert(key.end(), y.begin(), y.end());
  std::lock_guard<std::mutex> lock(g_mu);
  auto& slot = Cache()[key];
  if (!slot) slot = MakeOp(kind, x, w, y, {sh, sw}, {pt, pl}, {pb, pr});
  return slot;
}

// Runs `op` on user-layout buffers (a, b) -> out, reordering where the primitive prefers another layout.
void Execute(const Op& op, Buffers& buffers, void* a, void* b, void* out) {
  thread_local dnnl::stream stream(Engine());
  void* ptr[3] = {a, b, out};
  std::unordered_map<int, dnnl::memory> args;
  dnnl::memory user_out, got_out;
  for (int i = 0; i < 3; ++i) {
    dnnl::memory user(op.user[i], Engine(), ptr[i]);
    if (!op.convert[i]) {
      args[op.arg[i]] = user;
      continue;
    }
    dnnl::memory mine(op.want[i], Engine(), buffers.Get(i, op.want[i].get_size()));
    if (i < 2) {
      op.convert[i].execute(stream, user, mine);
    } else {
      user_out = user;
      got_out = mine;
    }
    args[op.arg[i]] = mine;
  }
  args[DNNL_ARG_SCRATCHPAD] = dnnl::memory(op.scratchpad, Engine(), buffers.Get(3, op.scratchpad.get_size()));
  op.prim.execute(stream, args);
  if (user_out) op.convert[2].execute(stream, got_out, user_out);
  stream.wait();
}

// Weight gradient summed over batch chunks of `per_chunk` images (onednn.py picks it), pairwise. oneDNN
// accumulates one long sum over N*Ho*Wo; on 32 images of 32x32 its error was 4e-6 of the
// largest entry versus 7e-7 for XLA, enough for 1- and 4-device runs to drift apart by 1e-4.
void BwdWeightsChunked(const std::vector<int64_t>& x, const std::vector<int64_t>& w,
                       const std::vector<int64_t>& y, const float* src, const float* dy, float* dw, int64_t sh,
                       int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t per_chunk,
                       Buffers& buffers) {
  const int64_t n = x[0], src_stride = x[1] * x[2] * x[3], dy_stride = y[1] * y[2] * y[3];
  const size_t count = static_cast<size_t>(w[0] * w[1] * w[2] * w[3]);
  std::vector<std::vector<float>> level;  // level[k]: sum of 2^k chunks, empty when unused
  std::vector<float> cur(count);
  for (int64_t start = 0; start < n; start += per_chunk) {
    const int64_t nb = std::min(per_chunk, n - start);
    std::vector<int64_t> xc = x, yc = y;
    xc[0] = yc[0] = nb;
    auto op = GetOp(kBwdWeights, xc, w, yc, sh, sw, pt, pb, pl, pr);
    Execute(*op, buffers, const_cast<float*>(src + start * src_stride), const_cast<float*>(dy + start * dy_stride),
            cur.data());
    size_t k = 0;
    for (; k < level.size() && !level[k].empty(); ++k) {  // binary-counter carry: pairwise sums
      for (size_t i = 0; i < count; ++i) cur[i] += level[k][i];
      level[k].clear();
    }
    if (k == level.size()) level.emplace_back();
    level[k].swap(cur);
    cur.resize(count);
  }
  std::fill(dw, dw + count, 0.0f);
  for (const auto& part : level) {
    for (size_t i = 0; i < part.size(); ++i) dw[i] += part[i];  // empty levels add nothing
  }
}

ffi::Error Run(Kind kind, const std::vector<int64_t>& x, const std::vector<int64_t>& w,
               const std::vector<int64_t>& y, void* a, void* b, void* out, int64_t sh, int64_t sw,
               int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t threads, int64_t chunk) {
  if (x.size() != 4 || w.size() != 4 || y.size() != 4) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "onednn conv: expected rank-4 NHWC/HWIO arrays");
  }
  if (threads > 0) omp_set_num_threads(static_cast<int>(threads));  // this XLA thread's teams only
  try {
    thread_local Buffers buffers;
    if (kind == kBwdWeights && chunk > 0 && chunk < y[0]) {
      BwdWeightsChunked(x, w, y, static_cast<const float*>(a), static_cast<const float*>(b),
                        static_cast<float*>(out), sh, sw, pt, pb, pl, pr, chunk, buffers);
    } else {
      Execute(*GetOp(kind, x, w, y, sh, sw, pt, pb, pl, pr), buffers, a, b, out);
    }
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN convolution failed: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error FwdImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> y, int64_t sh,
                   int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t threads, int64_t chunk) {
  return Run(kFwd, Dims(x.dimensions()), Dims(w.dimensions()), Dims(y->dimensions()), x.untyped_data(),
             w.untyped_data(), y->untyped_data(), sh, sw, pt, pb, pl, pr, threads, chunk);
}

ffi::Error BwdDataImpl(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> dx,
                       int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr,
                       int64_t threads, int64_t chunk) {
  return Run(kBwdData, Dims(dx->dimensions()), Dims(w.dimensions()), Dims(dy.dimensions()), dy.untyped_data(),
             w.untyped_data(), dx->untyped_data(), sh, sw, pt, pb, pl, pr, threads, chunk);
}

ffi::Error BwdWeightsImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy, ffi::ResultBuffer<ffi::F32> dw,
                          int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr,
                       int64_t threads, int64_t chunk) {
  return Run(kBwdWeights, Dims(x.dimensions()), Dims(dw->dimensions()), Dims(dy.dimensions()), x.untyped_data(),
             dy.untyped_data(), dw->untyped_data(), sh, sw, pt, pb, pl, pr, threads, chunk);
}

}  // namespace

#define FETAL_CONV_BINDING                                                                      \
  ffi::Ffi::Bind()                                                                              \
      .Arg<ffi::Buffer<ffi::F32>>()                                                             \
      .Arg<ffi::Buffer<ffi::F32>>()                                                             \
      .Ret<ffi::Buffer<ffi::F32>>()                                                             \
      .Attr<int64_t>("sh")                                                                      \
      .Attr<int64_t>("sw")                                                                      \
      .Attr<int64_t>("pt")                                                                      \
      .Attr<int64_t>("pb")                                                                      \
      .Attr<int64_t>("pl")                                                                      \
      .Attr<int64_t>("pr")                                                                      \
      .Attr<int64_t>("threads")                                                                 \
      .Attr<int64_t>("chunk")

XLA_FFI_DEFINE_HANDLER_SYMBOL(FetalOnednnConvFwd, FwdImpl, FETAL_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(FetalOnednnConvBwdData, BwdDataImpl, FETAL_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(FetalOnednnConvBwdWeights, BwdWeightsImpl, FETAL_CONV_BINDING);
