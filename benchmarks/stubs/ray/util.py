"""``ray.util.ActorPool`` for the stand-in: used only with actors."""


class ActorPool:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("ray stand-in: actors are not available (leave num_actors unset)")
