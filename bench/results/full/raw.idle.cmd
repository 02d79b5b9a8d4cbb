onlychat-loadgen --peer raw --url ws://127.0.0.1:38080 --label raw --duration 5s idle --connections 19000
