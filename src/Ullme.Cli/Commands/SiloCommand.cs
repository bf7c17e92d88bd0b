using System.CommandLine;
using Microsoft.Extensions.Logging;
using Ullme.MLNet;
using Ullme.MLNet.Orleans.Hosting;

namespace Ullme.Cli.Commands;

/// <summary><c>ullme silo</c>: one Orleans silo hosting one model replica, embedding the cluster's jobs until stopped.</summary>
internal static class SiloCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var cluster = ClusterOptions.Cluster();
        var stateDir = ClusterOptions.StateDirectory();
        var clusterId = ClusterOptions.ClusterId();
        var port = CommonOptions.NullableInt("--port", "Silo-to-silo port (default 11111: the primary silo of a localhost cluster; give the others their own).");
        var gatewayPort = CommonOptions.NullableInt("--gateway-port", "Port clients (ullme job, UllmeCluster) connect to (default 30000).");
        var dtype = CommonOptions.DType();
        var device = CommonOptions.Device();
        var backend = CommonOptions.Backend();
        var threads = CommonOptions.Threads();
        var command = new Command("silo", "Run an Orleans silo that hosts one model replica and embeds work items of the cluster's jobs (ullme job submit) until SIGTERM/Ctrl+C.")
        {
            model, cluster, stateDir, clusterId, port, gatewayPort, dtype, device, backend, threads,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var loadOptions = CommonOptions.LoadOptions(parse.GetValue(dtype)!, parse.GetValue(device)!, parse.GetValue(threads), parse.GetValue(backend));
            CommonOptions.ApplyThreads(parse.GetValue(threads));
            var siloOptions = new UllmeSiloOptions
            {
                Cluster = parse.GetValue(cluster)!,
                StateDirectory = parse.GetValue(stateDir),
                ClusterId = parse.GetValue(clusterId),
                Port = parse.GetValue(port),
                GatewayPort = parse.GetValue(gatewayPort),
                ConfigureLogging = b => b
                    .AddConsole(c => c.LogToStandardErrorThreshold = LogLevel.Trace)
                    .AddSimpleConsole(c => { c.SingleLine = true; c.TimestampFormat = "HH:mm:ss "; })
                    .AddFilter("Ullme", LogLevel.Information),
            };
            using var loaded = CliConsole.LoadModel(parse.GetValue(model)!, loadOptions);
            await using var silo = UllmeSilo.Create(loaded, siloOptions, OptionNames.Backend.ToName(loadOptions.Backend));
            await silo.StartAsync(cancellationToken);
            CliConsole.Note($"{loaded.ModelId} ({loaded.EmbeddingDimension} dimensions) on {silo.ClusterDescription}. SIGTERM or Ctrl+C gives the work item in hand back and leaves the cluster.");
            Console.Out.WriteLine($"Silo listening on port {silo.Port}, gateway {silo.GatewayPort}");
            Console.Out.Flush();
            try
            {
                await Task.Delay(Timeout.Infinite, cancellationToken);
            }
            catch (OperationCanceledException)
            {
            }
            await silo.StopAsync(CancellationToken.None);
            CliConsole.Note("silo stopped.");
            return 0;
        });
        return command;
    }
}

/// <summary>The options every cluster command shares.</summary>
internal static class ClusterOptions
{
    public static Option<string> Cluster() => new("--cluster")
    {
        Description = "localhost (one machine; primary silo on port 11111), localhost:<primary silo port>, or a PostgreSQL connection string (Host=...;Database=...;Username=...;Password=...) for a cluster of machines.",
        DefaultValueFactory = _ => "localhost",
    };

    public static Option<string?> StateDirectory() => new("--state-dir")
    {
        Description = "A localhost cluster's state folder (job state, live gateways); every silo and client of the cluster must give the same (default: $ULLME_CLUSTER_STATE or ~/.local/share/ullme/cluster-<id>-<port>).",
    };

    public static Option<string?> ClusterId() => new("--cluster-id") { Description = "Silos with the same id form one cluster (default: ullme)." };
}
