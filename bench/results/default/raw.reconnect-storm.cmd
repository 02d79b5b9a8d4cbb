onlychat-loadgen --peer raw --url ws://127.0.0.1:38080 --label raw --duration 30s reconnect-storm --clients 2000
