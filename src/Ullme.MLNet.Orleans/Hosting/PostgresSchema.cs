using System.Data;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Npgsql;

namespace Ullme.MLNet.Orleans.Hosting;

/// <summary>
/// The tables, functions and stored queries (<c>OrleansQuery</c>) that Orleans' ADO.NET clustering and grain
/// persistence providers need in a PostgreSQL database, created once from the dotnet/orleans scripts embedded in this
/// assembly (Schema/PostgreSQL, see its README.md). Safe to call from every silo at start-up: the check and the
/// creation run in one transaction under a transaction-scoped advisory lock, so concurrent callers create the schema
/// once and the others find it.
/// </summary>
internal static partial class PostgresSchema
{
    /// <summary>The scripts for a fresh database, in the order they run, each with a table it creates (present means
    /// the script already ran).</summary>
    internal static readonly IReadOnlyList<(string Script, string Table)> Scripts =
    [
        ("PostgreSQL-Main.sql", "orleansquery"),
        ("PostgreSQL-Clustering.sql", "orleansmembershiptable"),
        ("PostgreSQL-Persistence.sql", "orleansstorage"),
    ];

    /// <summary>The migration for databases made with clustering scripts older than the query
    /// <c>CleanupDefunctSiloEntriesKey</c> (which the 10.x clustering provider requires); it inserts only that query,
    /// <c>ON CONFLICT DO NOTHING</c>.</summary>
    internal const string CleanupDefunctSiloEntriesMigration = "PostgreSQL-Clustering-3.7.0.sql";

    /// <summary>The stored queries the Microsoft.Orleans.Clustering.AdoNet 10.4 provider requires (its
    /// <c>DbStoredQueries</c> throws at start-up when one is missing).</summary>
    internal static readonly IReadOnlyList<string> ClusteringQueryKeys =
    [
        "GatewaysQueryKey", "MembershipReadRowKey", "MembershipReadAllKey", "InsertMembershipVersionKey",
        "UpdateIAmAlivetimeKey", "InsertMembershipKey", "UpdateMembershipKey", "DeleteMembershipTableEntriesKey",
        "CleanupDefunctSiloEntriesKey",
    ];

    /// <summary>The stored queries the Microsoft.Orleans.Persistence.AdoNet 10.4 provider reads at start-up
    /// (<c>DeleteStorageKey</c> only with <c>DeleteStateOnClear</c>).</summary>
    internal static readonly IReadOnlyList<string> PersistenceQueryKeys =
        ["WriteToStorageKey", "ReadFromStorageKey", "ClearStorageKey", "DeleteStorageKey"];

    /// <summary>The key of the transaction-scoped advisory lock (per database) that serialises schema creation
    /// ("UllmeOrl" in ASCII).</summary>
    internal const long AdvisoryLockKey = 0x556C6C6D654F726CL;

    private const string ResourcePrefix = "Ullme.MLNet.Orleans.Schema.PostgreSQL.";

    /// <summary>
    /// Creates the Orleans clustering and persistence schema in the database <paramref name="connectionString"/>
    /// names (keyword form or a <c>postgres://</c> URI) unless it is already there; runs the missing scripts in one
    /// transaction. Idempotent.
    /// </summary>
    /// <exception cref="UllmeException">The server cannot be reached, refuses the login, or a script fails; the message
    /// names the host, port and database (never the password).</exception>
    public static async Task EnsureCreatedAsync(string connectionString, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(connectionString);
        NpgsqlConnectionStringBuilder builder = ParseConnectionString(connectionString);
        string where = Describe(builder);
        string step = "connecting";
        try
        {
            await using NpgsqlDataSource dataSource = NpgsqlDataSource.Create(builder);
            await using NpgsqlConnection connection = await dataSource.OpenConnectionAsync(ct).ConfigureAwait(false);

            step = "checking the Orleans schema";
            if (await IsCompleteAsync(connection, null, ct).ConfigureAwait(false)) return;

            await using NpgsqlTransaction transaction =
                await connection.BeginTransactionAsync(IsolationLevel.ReadCommitted, ct).ConfigureAwait(false);
            step = "waiting for the schema lock";
            await using (var lockCommand = new NpgsqlCommand("SELECT pg_advisory_xact_lock(@key)", connection, transaction))
            {
                // Another silo may be creating the schema; it holds the lock for seconds at most.
                lockCommand.CommandTimeout = 300;
                lockCommand.Parameters.AddWithValue("key", AdvisoryLockKey);
                await lockCommand.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
            }

            // Checked again under the lock: a silo that started at the same time may have created it meanwhile (read
            // committed, so each check sees what that silo committed while this one waited).
            foreach ((string script, string table) in Scripts)
            {
                step = $"checking table {table}";
                if (await TableExistsAsync(connection, transaction, table, ct).ConfigureAwait(false)) continue;
                step = $"running {script}";
                await ExecuteScriptAsync(connection, transaction, script, ct).ConfigureAwait(false);
            }
            step = "checking the stored queries";
            if (!await QueryExistsAsync(connection, transaction, "CleanupDefunctSiloEntriesKey", ct).ConfigureAwait(false))
            {
                step = $"running {CleanupDefunctSiloEntriesMigration}";
                await ExecuteScriptAsync(connection, transaction, CleanupDefunctSiloEntriesMigration, ct).ConfigureAwait(false);
            }
            step = "committing the Orleans schema";
            await transaction.CommitAsync(ct).ConfigureAwait(false);
        }
        catch (Exception ex) when ((ex is NpgsqlException or SocketException or TimeoutException or IOException)
                                   && !ct.IsCancellationRequested)
        {
            throw new UllmeException($"PostgreSQL {where}: {step} failed: {Reason(ex)}", ex);
        }
    }

    /// <summary>
    /// Whether <paramref name="cluster"/> (the value of a <c>--cluster</c>-style setting) is a PostgreSQL connection
    /// string: keyword form with <c>Host=</c> or <c>Server=</c>, or a <c>postgres://</c> / <c>postgresql://</c> URI.
    /// Anything else (<c>localhost</c>, a silo address, a file path) is not.
    /// </summary>
    internal static bool IsPostgres(string cluster)
    {
        ArgumentNullException.ThrowIfNull(cluster);
        string value = cluster.Trim();
        return IsUri(value) || KeywordHost().IsMatch(value);
    }

    /// <summary>
    /// The keyword connection string (what Npgsql and Orleans' ADO.NET providers take) for a PostgreSQL connection
    /// string in either form: a <c>postgres://user:password@host:port/database?sslmode=require</c> URI is converted
    /// (percent-escapes decoded; several hosts, <c>[IPv6]</c> hosts and the common libpq query parameters
    /// understood); a keyword string is returned in Npgsql's normalised form.
    /// </summary>
    /// <exception cref="UllmeException">Not a valid connection string; the message never shows the password.</exception>
    internal static string ToConnectionString(string cluster) => ParseConnectionString(cluster).ConnectionString;

    internal static NpgsqlConnectionStringBuilder ParseConnectionString(string cluster)
    {
        ArgumentNullException.ThrowIfNull(cluster);
        string value = cluster.Trim();
        if (IsUri(value)) return FromUri(value);
        try
        {
            return new NpgsqlConnectionStringBuilder(value);
        }
        catch (Exception ex) when (ex is ArgumentException or FormatException or InvalidCastException)
        {
            throw new UllmeException($"not a valid PostgreSQL connection string: {ex.Message}", ex);
        }
    }

    private static bool IsUri(string value) =>
        value.StartsWith("postgres://", StringComparison.OrdinalIgnoreCase)
        || value.StartsWith("postgresql://", StringComparison.OrdinalIgnoreCase);

    [GeneratedRegex(@"(?:^|;)\s*(?:host|server)\s*=", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex KeywordHost();

    /// <summary>libpq URI query parameters whose Npgsql keyword differs from their name.</summary>
    private static readonly Dictionary<string, string> UriParameters = new(StringComparer.OrdinalIgnoreCase)
    {
        ["sslmode"] = "SSL Mode",
        ["sslrootcert"] = "Root Certificate",
        ["sslcert"] = "SSL Certificate",
        ["sslkey"] = "SSL Key",
        ["sslpassword"] = "SSL Password",
        ["application_name"] = "Application Name",
        ["connect_timeout"] = "Timeout",
        ["target_session_attrs"] = "Target Session Attributes",
        ["options"] = "Options",
        ["user"] = "Username",
        ["password"] = "Password",
        ["dbname"] = "Database",
        ["host"] = "Host",
        ["port"] = "Port",
        ["passfile"] = "Passfile",
        ["krbsrvname"] = "Kerberos Service Name",
        ["gssencmode"] = "GSS Encryption Mode",
        ["channel_binding"] = "Channel Binding",
        ["require_auth"] = "Require Auth",
        ["load_balance_hosts"] = "Load Balance Hosts",
        ["client_encoding"] = "Client Encoding",
    };

    private static NpgsqlConnectionStringBuilder FromUri(string uri)
    {
        string rest = uri[(uri.IndexOf("://", StringComparison.Ordinal) + 3)..];
        string query = "";
        int q = rest.IndexOf('?');
        if (q >= 0) (rest, query) = (rest[..q], rest[(q + 1)..]);
        string database = "";
        int slash = rest.IndexOf('/');
        if (slash >= 0) (rest, database) = (rest[..slash], Uri.UnescapeDataString(rest[(slash + 1)..]));
        string hosts = rest;
        string? user = null, password = null;
        int at = rest.LastIndexOf('@');
        if (at >= 0)
        {
            string userInfo = rest[..at];
            hosts = rest[(at + 1)..];
            int colon = userInfo.IndexOf(':');
            user = Uri.UnescapeDataString(colon >= 0 ? userInfo[..colon] : userInfo);
            if (colon >= 0) password = Uri.UnescapeDataString(userInfo[(colon + 1)..]);
        }

        var builder = new NpgsqlConnectionStringBuilder();
        var hostList = new List<(string Host, int? Port)>();
        foreach (string part in hosts.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            hostList.Add(ParseHost(part));
        if (hostList.Count == 1)
        {
            builder.Host = hostList[0].Host;
            if (hostList[0].Port is int port) builder.Port = port;
        }
        else if (hostList.Count > 1)
        {
            builder.Host = string.Join(',', hostList.Select(h => h.Port is int p ? $"{Bracket(h.Host)}:{p}" : h.Host));
        }
        if (!string.IsNullOrEmpty(user)) builder.Username = user;
        if (password is not null) builder.Password = password;
        if (database.Length > 0) builder.Database = database;

        foreach (string pair in query.Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = pair.IndexOf('=');
            string key = Uri.UnescapeDataString((eq >= 0 ? pair[..eq] : pair).Replace('+', ' '));
            string value = eq >= 0 ? Uri.UnescapeDataString(pair[(eq + 1)..].Replace('+', ' ')) : "";
            if (key.Equals("sslmode", StringComparison.OrdinalIgnoreCase)) value = value.Replace("-", "");
            string keyword = UriParameters.TryGetValue(key, out string? mapped) ? mapped : key;
            try
            {
                builder[keyword] = value;
            }
            catch (Exception ex) when (ex is ArgumentException or FormatException or InvalidCastException or OverflowException)
            {
                throw new UllmeException($"the PostgreSQL URI parameter '{key}' is not supported or has an invalid value", ex);
            }
        }
        if (string.IsNullOrEmpty(builder.Host))
            throw new UllmeException("the PostgreSQL URI names no host (postgres://user:password@host:port/database)");
        return builder;

        static string Bracket(string host) => host.Contains(':') ? $"[{host}]" : host;
    }

    private static (string Host, int? Port) ParseHost(string part)
    {
        string host = part;
        string? port = null;
        if (part.StartsWith('['))
        {
            int close = part.IndexOf(']');
            if (close < 0) throw new UllmeException($"the PostgreSQL URI host '{part}' lacks its closing ']'");
            host = part[1..close];
            if (close + 1 < part.Length && part[close + 1] == ':') port = part[(close + 2)..];
        }
        else
        {
            int colon = part.LastIndexOf(':');
            if (colon >= 0) (host, port) = (part[..colon], part[(colon + 1)..]);
        }
        host = Uri.UnescapeDataString(host);
        if (port is null || port.Length == 0) return (host, null);
        if (!int.TryParse(port, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture,
                out int value) || value is < 1 or > 65535)
            throw new UllmeException($"the PostgreSQL URI port '{port}' is not a port number");
        return (host, value);
    }

    /// <summary>"at host:port, database 'name' (user 'x')": what error messages show of the connection string.</summary>
    private static string Describe(NpgsqlConnectionStringBuilder builder)
    {
        string host = string.IsNullOrEmpty(builder.Host) ? "(no host)" : builder.Host;
        string endpoint = host.Contains(',') ? host : $"{host}:{builder.Port}";
        string database = builder.Database ?? builder.Username ?? "(default)";
        string user = string.IsNullOrEmpty(builder.Username) ? "" : $" as user '{builder.Username}'";
        return $"at {endpoint}, database '{database}'{user}";
    }

    private static string Reason(Exception ex)
    {
        if (ex is PostgresException pg) return $"{pg.MessageText} (SQLSTATE {pg.SqlState})";
        Exception inner = ex;
        while (inner is NpgsqlException { InnerException: { } next } && next is not PostgresException) inner = next;
        if (inner is NpgsqlException { InnerException: PostgresException innerPg }) return Reason(innerPg);
        return inner == ex || inner.Message == ex.Message ? ex.Message : $"{ex.Message}: {inner.Message}";
    }

    /// <summary>Every script's table and the 10.x-required query are present (the fast path, no lock taken).</summary>
    private static async Task<bool> IsCompleteAsync(NpgsqlConnection connection, NpgsqlTransaction? transaction,
        CancellationToken ct)
    {
        foreach ((_, string table) in Scripts)
            if (!await TableExistsAsync(connection, transaction, table, ct).ConfigureAwait(false)) return false;
        return await QueryExistsAsync(connection, transaction, "CleanupDefunctSiloEntriesKey", ct).ConfigureAwait(false);
    }

    /// <summary>Whether <paramref name="table"/> exists in the connection's current schema (where the scripts'
    /// unqualified CREATE TABLE puts it). A query on pg_class, not <c>to_regclass</c>: that reads the backend's catalog
    /// cache, which does not yet see a table another session committed while this one waited for the advisory lock
    /// (an advisory lock does not process catalog invalidations); the query reads with the statement's snapshot.</summary>
    private static async Task<bool> TableExistsAsync(NpgsqlConnection connection, NpgsqlTransaction? transaction,
        string table, CancellationToken ct)
    {
        await using var command = new NpgsqlCommand(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            + "WHERE c.relname = @name AND n.nspname = current_schema())", connection, transaction);
        command.Parameters.AddWithValue("name", table);
        return await command.ExecuteScalarAsync(ct).ConfigureAwait(false) is true;
    }

    private static async Task<bool> QueryExistsAsync(NpgsqlConnection connection, NpgsqlTransaction? transaction,
        string key, CancellationToken ct)
    {
        if (!await TableExistsAsync(connection, transaction, "orleansquery", ct).ConfigureAwait(false)) return false;
        await using var command = new NpgsqlCommand(
            "SELECT EXISTS (SELECT 1 FROM orleansquery WHERE querykey = @key)", connection, transaction);
        command.Parameters.AddWithValue("key", key);
        return await command.ExecuteScalarAsync(ct).ConfigureAwait(false) is true;
    }

    private static async Task ExecuteScriptAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, string script,
        CancellationToken ct)
    {
        await using var command = new NpgsqlCommand(ReadScript(script), connection, transaction) { CommandTimeout = 300 };
        await command.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
    }

    /// <summary>The text of an embedded script (Schema/PostgreSQL/<paramref name="script"/>).</summary>
    internal static string ReadScript(string script)
    {
        using Stream stream = typeof(PostgresSchema).Assembly.GetManifestResourceStream(ResourcePrefix + script)
            ?? throw new InvalidOperationException($"embedded resource {ResourcePrefix}{script} is missing from the build");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
