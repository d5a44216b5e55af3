from privacy_lock.cli import main

main()
