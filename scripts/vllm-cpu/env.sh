# Runtime settings for vLLM CPU (source this). VLLM_VENV: the venv (default /tmp/vllmenv);
# VLLM_WORK: where the shim library was built (default /tmp/vllm-check).
export VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=1 VLLM_CPU_OMP_THREADS_BIND=all
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export LD_PRELOAD="${VLLM_VENV:-/tmp/vllmenv}/lib/libiomp5.so ${VLLM_WORK:-/tmp/vllm-check}/libglibcxx32shim.so"
