using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;
using Orleans.Storage;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Orleans.Jobs;

namespace Ullme.MLNet.Orleans.Hosting;

/// <summary>Where and how a silo runs.</summary>
public sealed record UllmeSiloOptions
{
    /// <summary><c>localhost</c>, <c>localhost:&lt;primary silo port&gt;</c>, or a PostgreSQL connection string.</summary>
    public string Cluster { get; init; } = "localhost";

    /// <summary>The silo-to-silo port (default: 11111, the primary of a localhost cluster).</summary>
    public int? Port { get; init; }

    /// <summary>The port clients connect to (default: 30000).</summary>
    public int? GatewayPort { get; init; }

    /// <summary>A localhost cluster's state folder (job state, live gateways); default
    /// <c>$ULLME_CLUSTER_STATE</c> or <c>~/.local/share/ullme/cluster-&lt;id&gt;-&lt;port&gt;</c>.</summary>
    public string? StateDirectory { get; init; }

    /// <summary>Silos with the same id form one cluster (default <c>ullme</c>).</summary>
    public string? ClusterId { get; init; }

    /// <summary>The address other machines reach this silo at on a PostgreSQL cluster (default: this host's first
    /// IPv4 address; loopback on a localhost cluster).</summary>
    public IPAddress? AdvertisedAddress { get; init; }

    /// <summary>Failure detection: a silo that misses this many probes of <see cref="ProbeTimeout"/> is declared dead and
    /// its leases expire on their own time. Defaults: 2 s, 2 misses (Orleans' own are 5 s and 3).</summary>
    public TimeSpan ProbeTimeout { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>See <see cref="ProbeTimeout"/>.</summary>
    public int MissedProbesLimit { get; init; } = 2;

    /// <summary>Adds log providers (the library itself writes nothing to the console).</summary>
    public Action<ILoggingBuilder>? ConfigureLogging { get; init; }
}

/// <summary>
/// An Orleans silo that hosts one <see cref="UllmeModel"/> replica and embeds work items of the cluster's jobs. Start it
/// with <see cref="StartAsync"/>; <see cref="StopAsync"/> (or disposal) gives its leases back and leaves the cluster.
/// </summary>
public sealed class UllmeSilo : IAsyncDisposable
{
    private readonly IHost _host;
    private readonly ClusterConnection _connection;

    private UllmeSilo(IHost host, ClusterConnection connection, int port, int gatewayPort)
    {
        _host = host;
        _connection = connection;
        Port = port;
        GatewayPort = gatewayPort;
    }

    /// <summary>The silo-to-silo port.</summary>
    public int Port { get; }

    /// <summary>The client gateway port.</summary>
    public int GatewayPort { get; }

    /// <summary>Where the cluster is, in words.</summary>
    public string ClusterDescription => _connection.ToString();

    /// <summary>Builds a silo around <paramref name="model"/> (which it does not dispose).</summary>
    public static UllmeSilo Create(UllmeModel model, UllmeSiloOptions? options = null, string backend = "torch")
    {
        ArgumentNullException.ThrowIfNull(model);
        return Build(model, options ?? new UllmeSiloOptions(), backend);
    }

    /// <summary>A silo without a model or worker: it hosts coordinators only (the coordinator benchmark).</summary>
    internal static UllmeSilo CreateCoordinatorOnly(UllmeSiloOptions options) => Build(null, options, "");

    private static UllmeSilo Build(UllmeModel? model, UllmeSiloOptions options, string backend)
    {
        var connection = ClusterConnection.Parse(options.Cluster, options.StateDirectory, options.ClusterId);
        int port = options.Port ?? connection.PrimaryPort;
        int gateway = options.GatewayPort ?? ClusterConnection.DefaultGatewayPort;
        if (port is < 1 or > 65535) throw new UllmeException($"--port {port}: use 1-65535.");
        if (gateway is < 1 or > 65535) throw new UllmeException($"--gateway-port {gateway}: use 1-65535.");
        if (port == gateway) throw new UllmeException($"--port and --gateway-port are both {port}; give them different ports.");
        if (options.ProbeTimeout <= TimeSpan.Zero || options.MissedProbesLimit < 1)
            throw new UllmeException("UllmeSiloOptions.ProbeTimeout must be positive and MissedProbesLimit at least 1.");

        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Logging.ClearProviders();
        // Orleans' own notes (ServerGC advice, placement retries while the cluster forms) stay out of the operator's log.
        builder.Logging.AddFilter("Orleans", LogLevel.Warning).AddFilter("Orleans.Runtime.Silo", LogLevel.Error)
            .AddFilter("Orleans.Runtime.Watchdog", LogLevel.Error)
            .AddFilter("Polly", LogLevel.Error).AddFilter("Microsoft", LogLevel.Warning);
        options.ConfigureLogging?.Invoke(builder.Logging);
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(30));
        builder.UseOrleans(silo =>
        {
            if (connection.IsLocalhost)
            {
                silo.UseLocalhostClustering(port, gateway, new IPEndPoint(IPAddress.Loopback, connection.PrimaryPort), ClusterNames.ServiceId, connection.ClusterId);
                var storage = new FolderGrainStorage(Path.Combine(connection.StateDirectory, "grains"));
                silo.Services.AddKeyedSingleton<IGrainStorage>(ClusterNames.Storage, storage);
            }
            else
            {
                string cs = connection.PostgresConnectionString!;
                silo.Configure<ClusterOptions>(o =>
                {
                    o.ClusterId = connection.ClusterId;
                    o.ServiceId = ClusterNames.ServiceId;
                });
                silo.UseAdoNetClustering(o =>
                {
                    o.Invariant = PostgresInvariant;
                    o.ConnectionString = cs;
                });
                silo.AddAdoNetGrainStorage(ClusterNames.Storage, o =>
                {
                    o.Invariant = PostgresInvariant;
                    o.ConnectionString = cs;
                    o.GrainStorageSerializer = JsonStateSerializer.Instance;
                });
                silo.ConfigureEndpoints(options.AdvertisedAddress ?? FirstAddress(), port, gateway, listenOnAnyHostAddress: true);
            }
            // Job calls take milliseconds; one addressed to a silo killed mid-call is retried by the worker, so it should
            // not wait Orleans' default 30 s for an answer that cannot come.
            silo.Configure<SiloMessagingOptions>(o => o.ResponseTimeout = TimeSpan.FromSeconds(15));
            silo.Configure<ClusterMembershipOptions>(o =>
            {
                o.ProbeTimeout = options.ProbeTimeout;
                o.NumMissedProbesLimit = options.MissedProbesLimit;
            });
        });
        if (model is not null)
        {
            // Registered after the silo: hosted services stop in reverse order, so the worker gives its lease back
            // while the silo can still send the call.
            builder.Services.AddSingleton(new SiloModel(model, backend));
            builder.Services.AddSingleton(new WorkerIdentity($"{Dns.GetHostName()}:{port}/{Environment.ProcessId}"));
            builder.Services.AddHostedService<EmbeddingWorker>();
        }
        return new UllmeSilo(builder.Build(), connection, port, gateway);
    }

    internal const string PostgresInvariant = "Npgsql";

    /// <summary>Joins the cluster (creating the PostgreSQL schema first when it is missing) and starts the worker.</summary>
    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        if (!_connection.IsLocalhost) await PostgresSchema.EnsureCreatedAsync(_connection.PostgresConnectionString!, cancellationToken);
        try
        {
            await _host.StartAsync(cancellationToken);
        }
        catch (Exception e) when (e is System.Net.Sockets.SocketException or IOException ||
                                  e.InnerException is System.Net.Sockets.SocketException)
        {
            throw new UllmeException($"the silo cannot listen on port {Port} / gateway {GatewayPort}: {e.Message}", e);
        }
        if (_connection.IsLocalhost) _connection.Announce(Port, GatewayPort);
    }

    /// <summary>Gives the worker's lease back and leaves the cluster.</summary>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        if (_connection.IsLocalhost) _connection.Withdraw(Port);
        await _host.StopAsync(cancellationToken);
    }

    public async ValueTask DisposeAsync()
    {
        if (_connection.IsLocalhost) _connection.Withdraw(Port);
        if (_host is IAsyncDisposable d) await d.DisposeAsync();
        else _host.Dispose();
    }

    private static IPAddress FirstAddress()
    {
        foreach (var a in Dns.GetHostAddresses(Dns.GetHostName()))
            if (a.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork && !IPAddress.IsLoopback(a)) return a;
        return IPAddress.Loopback;
    }
}
