"""The results contract in one place (docs/ARCHITECTURE.md, "Results contract").

    files     atomic writes (temporary file, fsync, rename) with the user's umask: every file a run or
              a report writes goes through it
    writers   history.csv / summary.csv rows and columns, written atomically (plain csv module)
    check     integrity of summary.csv against history.csv; readability of optuna.db (read-only sqlite3)

Plain Python: no torch, no pandas, no Ray.
"""
