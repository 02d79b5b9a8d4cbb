onlychat-loadgen --peer centrifugo --url ws://127.0.0.1:38080 --label centrifugo --duration 30s reconnect-storm --clients 2000
