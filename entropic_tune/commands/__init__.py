"""The command-line front-ends: they check input, then do I/O around the lower layers.

    main        `entropic-tune train | autotune | compare | search | ablate | report` (the console script)
    train       `entropic-tune train`: one run without Ray, its results folder
    autotune    `entropic-tune autotune`: probe the plant, print and write the recommended gains
    sweep       `compare | search | ablate`: flags checked before Ray is imported
    warmstarts  `python -m entropic_tune.commands.warmstarts`: list, rebuild or check the committed weights

Every command checks its input before it imports torch, transformers, Ray or pandas.
"""
