onlychat-loadgen --peer onlychat --url ws://127.0.0.1:38080 --label onlychat-standalone --duration 10s dm --pairs 500 --rate 1000
