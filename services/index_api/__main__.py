from services.index_api.app import main

main()
