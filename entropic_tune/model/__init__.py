"""The model room: what runs the language model, below any engine.

    policy      the Policy (model + tokenizer + device), the built-in tiny model, the eager forward
    warmstarts  the built-in model's warm-start: training, the on-disk cache, the committed weights
    loading     load_policy: a local Hugging Face model or the warm-started tiny model, read once per process
    limits      size bounds from the model and the machine, checked before a run (no torch)
    decoding    the compiled decoding step (static KV cache) of Qwen2/Llama-style decoders
    compiling   model.compile: what runs compiled, the compiled update forward

Direction inside the room: limits -> (policy, lazily, only to count a local model's prompt tokens);
policy <- warmstarts <- loading; policy <- decoding <- compiling. Importing the package imports nothing.
"""
