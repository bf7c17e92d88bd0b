using System.Globalization;
using System.Text.Json;
using Ullme.MLNet.IO;
using Ullme.MLNet.Orleans.Jobs;

namespace Ullme.MLNet.Orleans.Hosting;

/// <summary>How silos and clients find each other: a localhost cluster (one machine; its primary silo's port names
/// it and a state folder holds job state and the gateway list) or a PostgreSQL database (ADO.NET clustering and
/// grain storage: any machine, any silo may fail).</summary>
internal sealed record ClusterConnection
{
    public const int DefaultPrimaryPort = 11111;
    public const int DefaultGatewayPort = 30000;

    /// <summary>Null for a localhost cluster.</summary>
    public string? PostgresConnectionString { get; init; }

    public int PrimaryPort { get; init; } = DefaultPrimaryPort;

    /// <summary>The localhost cluster's state folder (grain state, the live gateways).</summary>
    public string StateDirectory { get; init; } = "";

    public string ClusterId { get; init; } = ClusterNames.DefaultClusterId;

    public bool IsLocalhost => PostgresConnectionString is null;

    /// <summary>Parses <paramref name="value"/>: <c>localhost</c>, <c>localhost:&lt;primary silo port&gt;</c>, or a
    /// PostgreSQL connection string (<c>Host=…;Database=…;Username=…;Password=…</c> or <c>postgres://…</c>).</summary>
    public static ClusterConnection Parse(string? value, string? stateDirectory = null, string? clusterId = null)
    {
        string v = (value ?? "localhost").Trim();
        string id = string.IsNullOrWhiteSpace(clusterId) ? ClusterNames.DefaultClusterId : clusterId.Trim();
        if (!id.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_'))
            throw new UllmeException($"--cluster-id '{clusterId}': use letters, digits, '-' and '_'.");
        if (v.Equals("localhost", StringComparison.OrdinalIgnoreCase) || v.StartsWith("localhost:", StringComparison.OrdinalIgnoreCase))
        {
            int port = DefaultPrimaryPort;
            if (v.Length > "localhost".Length &&
                (!int.TryParse(v["localhost:".Length..], NumberStyles.None, CultureInfo.InvariantCulture, out port) || port is < 1 or > 65535))
                throw new UllmeException($"--cluster '{value}': expected localhost:<primary silo port 1-65535>.");
            string dir = stateDirectory ?? Environment.GetEnvironmentVariable("ULLME_CLUSTER_STATE") ??
                Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData, Environment.SpecialFolderOption.Create), "ullme", $"cluster-{id}-{port}");
            return new ClusterConnection { PrimaryPort = port, StateDirectory = Path.GetFullPath(dir), ClusterId = id };
        }
        if (PostgresSchema.IsPostgres(v))
            return new ClusterConnection { PostgresConnectionString = PostgresSchema.ToConnectionString(v), ClusterId = id };
        throw new UllmeException($"--cluster '{value}': expected localhost, localhost:<port>, or a PostgreSQL connection string (Host=...;Database=...;Username=...;Password=...).");
    }

    public override string ToString() => IsLocalhost ? $"localhost:{PrimaryPort} (state in {StateDirectory})" : "PostgreSQL";

    private string GatewayFolder => Path.Combine(StateDirectory, "gateways");

    /// <summary>Announces a silo's gateway port to clients of a localhost cluster (removed by <see cref="Withdraw"/>;
    /// a killed silo's entry is ignored once its process is gone).</summary>
    public void Announce(int siloPort, int gatewayPort) =>
        AtomicFile.WriteAllText(Path.Combine(GatewayFolder, $"{siloPort}.json"),
            JsonSerializer.Serialize(new GatewayEntry(gatewayPort, Environment.ProcessId)));

    public void Withdraw(int siloPort)
    {
        try
        {
            File.Delete(Path.Combine(GatewayFolder, $"{siloPort}.json"));
        }
        catch (IOException)
        {
        }
    }

    /// <summary>The gateway ports of the live silos of a localhost cluster; an error when none is alive (never a
    /// guess: a default port could belong to another cluster on this machine).</summary>
    public int[] LiveGateways()
    {
        var ports = new List<int>();
        if (Directory.Exists(GatewayFolder))
            foreach (string f in Directory.GetFiles(GatewayFolder, "*.json"))
            {
                try
                {
                    var e = JsonSerializer.Deserialize<GatewayEntry>(File.ReadAllText(f));
                    if (e is not null && AtomicFile.IsAlive(e.Pid)) ports.Add(e.GatewayPort);
                }
                catch (Exception ex) when (ex is IOException or JsonException)
                {
                    // a silo writing or withdrawing its entry right now
                }
            }
        if (ports.Count == 0)
            throw new UllmeException($"cannot reach the cluster at {this}: no live silo has announced a gateway in '{GatewayFolder}' " +
                "(start one with `ullme silo`, with the same --cluster and --state-dir).");
        return [.. ports.Order()];
    }

    private sealed record GatewayEntry(int GatewayPort, int Pid);
}
