from services.qr_fetcher.app import main

main()
