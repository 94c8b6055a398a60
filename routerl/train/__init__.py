"""Training the routing policy: a supervised warm start, then GRPO over the routing environment.

``config``: the documented ``TrainConfig`` (YAML); ``episodes``: environments, the training
episode bank and validation episodes; ``teacher``: teacher routers for the warm start; ``sft``:
the warm start; ``rollout``: multi-round rollouts (TRL ``rollout_func``); ``rewards``: one GRPO
reward function per term; ``grpo``: the GRPO stage; ``validate``: the validation metric;
``callbacks``: checkpoint config and periodic validation; ``__main__``: the entry point::

    accelerate launch -m routerl.train --config configs/grpo_tiny.yaml
"""
