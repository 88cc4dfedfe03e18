#!/usr/bin/env escript
%% plainsight benchmark: round trips of SIZE bytes over one Erlang/OTP ssl
%% connection, client and server in this node, for SECS seconds.
%%
%% Usage: erlang_rr.escript CERT KEY NAME SIZE SECS [tlsv1.3|tlsv1.2]
%%   prints "rt_per_s=<n>" (tls_rr's output) and exits.
main([Cert, Key, Name, Size, Secs | Rest]) ->
    Version = case Rest of [V] -> list_to_atom(V); [] -> 'tlsv1.3' end,
    N = list_to_integer(Size),
    T = list_to_integer(Secs),
    {ok, _} = application:ensure_all_started(ssl),
    {ok, L} = ssl:listen(0, [binary, {active, false}, {reuseaddr, true},
                             {ip, {127, 0, 0, 1}}, {certfile, Cert}, {keyfile, Key},
                             {versions, [Version]}]),
    {ok, {_, Port}} = ssl:sockname(L),
    spawn_link(fun() ->
                       {ok, A} = ssl:transport_accept(L),
                       {ok, S} = ssl:handshake(A, 10000),
                       echo(S, N)
               end),
    {ok, C} = ssl:connect("127.0.0.1", Port,
                          [binary, {active, false}, {verify, verify_none},
                           {server_name_indication, Name}, {versions, [Version]}], 10000),
    Msg = binary:copy(<<"x">>, N),
    Until = erlang:monotonic_time(millisecond) + T * 1000,
    Count = loop(C, Msg, N, Until, 0),
    io:format("rt_per_s=~.1f~n", [Count / T]),
    halt(0).

echo(S, N) ->
    case ssl:recv(S, N) of
        {ok, D} -> ok = ssl:send(S, D), echo(S, N);
        _ -> ok
    end.

loop(C, Msg, N, Until, Count) ->
    case erlang:monotonic_time(millisecond) >= Until of
        true -> Count;
        false ->
            ok = ssl:send(C, Msg),
            {ok, _} = ssl:recv(C, N),
            loop(C, Msg, N, Until, Count + 1)
    end.
