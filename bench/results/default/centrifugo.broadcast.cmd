onlychat-loadgen --peer centrifugo --url ws://127.0.0.1:38080 --label centrifugo --duration 10s broadcast --rooms 20 --members 200 --rate 500
