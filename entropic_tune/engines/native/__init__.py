"""The native engine: a GRPO-style trainer written here over transformers models.

    trainer        Trainer(config, dist=None): step(), evaluate(), state_dict(), load_state_dict()
    rollout        sampling with a KV cache, rewards, group advantages, behaviour log-probs/entropy
    evaluation     the large evaluation (base/* before step 1, final/* after the last step)
    local_workers  `entropic-tune train --workers N`: N-1 spawned gloo processes beside rank 0
"""
