"""cxe: an exchange for China's carbon markets (CEA allowances and CCER credits)."""

__version__ = "0.1.0"
