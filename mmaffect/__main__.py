from mmaffect.cli import main

main()
