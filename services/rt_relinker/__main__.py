from services.rt_relinker.app import main

main()
