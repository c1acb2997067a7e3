from bot.cli import main

# Guarded: worker processes are spawned, and spawning re-imports the parent's __main__ module (as __mp_main__).
if __name__ == "__main__":
    raise SystemExit(main())
