"""A stand-in for ``ray`` so that EvoTorch imports without it (see ../README.md).

Only the names EvoTorch reads at import exist; calling any of them means an actor was asked for,
which this stand-in cannot run, so they raise."""


class ObjectRef:
    """Only a type annotation in EvoTorch."""


class ObjectArray:
    """Only a type annotation in EvoTorch."""


def remote(*args, **kwargs):
    """``@ray.remote`` leaves the class as it is: it is instantiated only with actors."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]
    return lambda cls: cls


def _no_actors(*args, **kwargs):
    raise RuntimeError("ray stand-in: actors are not available (leave num_actors unset)")


init = get = put = kill = available_resources = _no_actors


def is_initialized() -> bool:
    return False
