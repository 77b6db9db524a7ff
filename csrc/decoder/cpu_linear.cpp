#include "decoder/cpu_linear.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <mutex>

namespace fastwhisper::decoder {

at::Tensor cpu_project(const at::Tensor& x, const at::Tensor& weight) {
  const int64_t n = weight.size(0), k = weight.size(1);
  const int64_t rows = x.numel() / std::max<int64_t>(k, 1);
  const int64_t threads =
      std::min<int64_t>(at::get_num_threads(), static_cast<int64_t>(at::get_num_interop_threads()) + 1);
  if (rows < 1 || rows > kSplitRows || threads < 2 || n < 2 * kSplitAlign || !x.is_contiguous() ||
      !weight.is_contiguous() || x.scalar_type() != at::kFloat || weight.scalar_type() != at::kFloat) {
    return at::matmul(x, weight.t());
  }
  const at::Tensor x2 = x.view({rows, k});             // [M, K]
  at::Tensor out = at::empty({rows, n}, x.options());  // [M, N]
  const int64_t chunk = ((n + threads - 1) / threads + kSplitAlign - 1) / kSplitAlign * kSplitAlign;
  const int64_t chunks = (n + chunk - 1) / chunk;
  auto product = [&](int64_t c) {
    const int64_t start = c * chunk, len = std::min(chunk, n - start);
    at::Tensor o = out.narrow(1, start, len);  // [M, len], row stride N
    at::mm_out(o, x2, weight.narrow(0, start, len).t());
  };
  std::mutex mutex;
  std::condition_variable all_done;
  int64_t pending = chunks - 1;
  std::exception_ptr error;
  for (int64_t c = 1; c < chunks; ++c) {
    at::launch([&, c] {
      std::exception_ptr caught;
      try {
        product(c);
      } catch (...) {
        caught = std::current_exception();
      }
      std::lock_guard<std::mutex> lock(mutex);
      if (caught && !error) error = caught;
      if (--pending == 0) all_done.notify_one();
    });
  }
  std::exception_ptr mine;
  try {
    product(0);
  } catch (...) {
    mine = std::current_exception();
  }
  {
    std::unique_lock<std::mutex> lock(mutex);
    all_done.wait(lock, [&] { return pending == 0; });  // the other chunks read x2 and write out: wait for them
  }
  if (mine) std::rethrow_exception(mine);
  if (error) std::rethrow_exception(error);
  auto sizes = x.sizes().vec();
  sizes.back() = n;
  return out.view(sizes);
}

}  // namespace fastwhisper::decoder
