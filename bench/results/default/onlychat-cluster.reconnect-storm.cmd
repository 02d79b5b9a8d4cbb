onlychat-loadgen --peer onlychat --url ws://127.0.0.1:38080,ws://127.0.0.1:38081 --label onlychat-cluster --duration 30s reconnect-storm --clients 2000
