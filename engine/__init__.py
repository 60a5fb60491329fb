"""cxe: an exchange for China's carbon markets (CEA allowances and CCER credits)."""

from engine.jitcache import configure as _configure_jit_cache

_configure_jit_cache()

__version__ = "0.1.0"
