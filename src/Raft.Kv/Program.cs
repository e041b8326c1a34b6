using Raft.Kv.Cli;

return await RaftvCli.RunAsync(args, Console.Out, Console.Error, CancellationToken.None);
