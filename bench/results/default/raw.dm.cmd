onlychat-loadgen --peer raw --url ws://127.0.0.1:38080 --label raw --duration 10s dm --pairs 500 --rate 1000
