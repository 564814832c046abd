from steer.cli import main

main()
