"""wassnet: provably 1-Lipschitz networks for W1 estimation, WGANs and certified classification."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wassnet")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from wassnet.critics import conv_critic, dense_critic, make_critic

__all__ = ["__version__", "conv_critic", "dense_critic", "make_critic"]
