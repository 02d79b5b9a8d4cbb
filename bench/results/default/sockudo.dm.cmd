onlychat-loadgen --peer pusher --url ws://127.0.0.1:38080 --label sockudo --duration 10s dm --pairs 500 --rate 1000
