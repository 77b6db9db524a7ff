// StepGraphs on CUDA (at::cuda::CUDAGraph); a build without CUDA has none.
#include "decoder/step_graphs.h"

#include <map>

#ifdef FASTWHISPER_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace fastwhisper::decoder {

#ifdef FASTWHISPER_WITH_CUDA
namespace {

class CudaStepGraphs : public StepGraphs {
 public:
  explicit CudaStepGraphs(c10::Device device) : device_(device) {}

  at::Tensor run(int64_t key, const std::function<at::Tensor()>& step) override {
    c10::cuda::CUDAGuard device_guard(device_);
    auto it = graphs_.find(key);
    if (it == graphs_.end()) {
      if (static_cast<int64_t>(graphs_.size()) >= kMaxStepGraphs) {
        auto oldest = graphs_.begin();
        for (auto g = graphs_.begin(); g != graphs_.end(); ++g) {
          if (g->second.last_used < oldest->second.last_used) oldest = g;
        }
        graphs_.erase(oldest);
      }
      it = graphs_.emplace(key, capture(step)).first;
    }
    it->second.last_used = ++uses_;
    it->second.graph->replay();
    return it->second.output;
  }

  void clear() override { graphs_.clear(); }
  int64_t size() const override { return static_cast<int64_t>(graphs_.size()); }

 private:
  struct Captured {
    std::unique_ptr<at::cuda::CUDAGraph> graph;
    at::Tensor output;
    int64_t last_used = 0;  // uses_ at its last replay
  };

  // Capture on a side stream (a graph cannot be captured on the legacy default stream), ordered
  // after the work already queued on the current stream. One eager run first warms up the
  // libraries (cuBLAS handles and workspaces); the step is idempotent for a given input.
  Captured capture(const std::function<at::Tensor()>& step) {
    const auto current = at::cuda::getCurrentCUDAStream(device_.index());
    auto side = at::cuda::getStreamFromPool(false, device_.index());
    at::cuda::CUDAEvent ready;
    ready.record(current);
    ready.block(side);
    Captured c;
    {
      c10::cuda::CUDAStreamGuard stream_guard(side);
      step();
      c.graph = std::make_unique<at::cuda::CUDAGraph>();
      // Thread-local mode: other threads (a caller's VAD pass on the GPU) may allocate CUDA memory while
      // this one captures; the global mode would make their allocations fail.
      c.graph->capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
      try {
        c.output = step();
        c.graph->capture_end();
      } catch (...) {
        end_failed_capture(*c.graph, side.stream());
        throw;
      }
    }
    at::cuda::CUDAEvent done;
    done.record(side);
    done.block(current);
    return c;
  }

  // A step that throws while its stream captures (out of memory, a failed check) must not leave the stream
  // capturing: every later CUDA allocation on this thread would then fail. capture_end() ends it and returns
  // the graph's pool; when the capture was invalidated it throws, and the stream's capture is ended here
  // directly. The step's own error is the one reported, so these cleanup calls' errors are dropped on purpose.
  static void end_failed_capture(at::cuda::CUDAGraph& graph, cudaStream_t stream) {
    try {
      graph.capture_end();
      return;
    } catch (const std::exception&) {
    }
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &status) == cudaSuccess && status != cudaStreamCaptureStatusNone) {
      cudaGraph_t abandoned = nullptr;
      if (cudaStreamEndCapture(stream, &abandoned) == cudaSuccess && abandoned != nullptr) {
        (void)cudaGraphDestroy(abandoned);
      }
    }
    (void)cudaGetLastError();
  }

  c10::Device device_;
  std::map<int64_t, Captured> graphs_;
  int64_t uses_ = 0;  // replays so far
};

}  // namespace

std::unique_ptr<StepGraphs> make_step_graphs(c10::Device device) {
  if (!device.is_cuda()) return nullptr;
  return std::make_unique<CudaStepGraphs>(device);
}
#else
std::unique_ptr<StepGraphs> make_step_graphs(c10::Device /*device*/) { return nullptr; }
#endif

}  // namespace fastwhisper::decoder
