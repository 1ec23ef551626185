from .allocator import restart_with_tcmalloc

restart_with_tcmalloc()  # before the commands' imports, which the restart would repeat

from .cli import main  # noqa: E402

main()
