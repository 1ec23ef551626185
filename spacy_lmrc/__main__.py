"""The command line: ``python -m spacy_lmrc`` and the ``spacy-lmrc`` console script."""

from .allocator import restart_with_tcmalloc


def main() -> None:
    """Run the command line, first restarted under tcmalloc where the system has it.

    The restart comes before the commands' imports (torch, transformers), which a restart after
    them would pay twice.
    """
    restart_with_tcmalloc()
    from .cli import main as run_command_line

    run_command_line()


if __name__ == "__main__":
    main()
