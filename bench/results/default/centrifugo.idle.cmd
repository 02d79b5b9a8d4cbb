onlychat-loadgen --peer centrifugo --url ws://127.0.0.1:38080 --label centrifugo --duration 5s idle --connections 5000
