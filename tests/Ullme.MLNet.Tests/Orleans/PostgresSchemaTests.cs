using System.Reflection;
using System.Text.RegularExpressions;
using Npgsql;
using Ullme.MLNet.Orleans.Hosting;

namespace Ullme.MLNet.Tests.Orleans;

/// <summary>The PostgreSQL server the tests that need one use: the connection string in <c>ULLME_TEST_POSTGRES</c>
/// (.ci/postgres.sh starts one and documents the value); those tests are skipped with a reason when it is unset.</summary>
public static class TestPostgres
{
    public const string Variable = "ULLME_TEST_POSTGRES";

    public static string? ConnectionString =>
        Environment.GetEnvironmentVariable(Variable) is { Length: > 0 } value ? value : null;

    public static string SkipReason =>
        $"{Variable} is not set (run .ci/postgres.sh and export {Variable}=\"Host=127.0.0.1;Port=54329;Username=ullme;Password=ullme;Database=ullme_orleans\")";

    /// <summary>A new empty database on that server, dropped on dispose; its connection string.</summary>
    public static async Task<TemporaryDatabase> CreateDatabaseAsync()
    {
        var admin = new NpgsqlConnectionStringBuilder(ConnectionString!);
        string name = $"ullme_test_{Guid.NewGuid():N}";
        await using (var connection = new NpgsqlConnection(admin.ConnectionString))
        {
            await connection.OpenAsync();
            await using var command = new NpgsqlCommand($"CREATE DATABASE {name}", connection);
            await command.ExecuteNonQueryAsync();
        }
        return new TemporaryDatabase(admin.ConnectionString, name, new NpgsqlConnectionStringBuilder(admin.ConnectionString) { Database = name }.ConnectionString);
    }

    public sealed class TemporaryDatabase(string adminConnectionString, string name, string connectionString) : IAsyncDisposable
    {
        public string Name { get; } = name;
        public string ConnectionString { get; } = connectionString;

        public async ValueTask DisposeAsync()
        {
            NpgsqlConnection.ClearAllPools();
            await using var connection = new NpgsqlConnection(adminConnectionString);
            await connection.OpenAsync();
            await using var command = new NpgsqlCommand($"DROP DATABASE IF EXISTS {Name} WITH (FORCE)", connection);
            await command.ExecuteNonQueryAsync();
        }
    }
}

/// <summary>A fact that needs the PostgreSQL test server; skipped with a reason when <c>ULLME_TEST_POSTGRES</c> is unset.</summary>
public sealed class PostgresFactAttribute : FactAttribute
{
    public PostgresFactAttribute()
    {
        if (TestPostgres.ConnectionString is null) Skip = TestPostgres.SkipReason;
    }
}

public sealed class PostgresSchemaTests
{
    [PostgresFact]
    public async Task EnsureCreated_makes_the_schema_once_and_registers_every_query_the_providers_need()
    {
        await using TestPostgres.TemporaryDatabase database = await TestPostgres.CreateDatabaseAsync();

        // Several silos starting at once: one creates the schema under the advisory lock, the others find it.
        await Task.WhenAll(Enumerable.Range(0, 6).Select(_ =>
            Task.Run(() => PostgresSchema.EnsureCreatedAsync(database.ConnectionString, CancellationToken.None))));
        // And again, sequentially: idempotent.
        await PostgresSchema.EnsureCreatedAsync(database.ConnectionString, CancellationToken.None);

        HashSet<string> keys = await QueryKeysAsync(database.ConnectionString);
        Assert.Subset(keys, Set("InsertMembershipKey", "UpdateIAmAlivetimeKey", "WriteToStorageKey", "ReadFromStorageKey", "ClearStorageKey"));
        Assert.Subset(keys, Set([.. PostgresSchema.ClusteringQueryKeys]));
        Assert.Subset(keys, Set([.. PostgresSchema.PersistenceQueryKeys]));
        // What the referenced provider packages themselves require (so a package upgrade that adds a query fails here).
        Assert.Subset(keys, ClusteringProviderKeys());
        Assert.Subset(keys, PersistenceProviderKeys());
        // Reminders are not part of this schema.
        Assert.DoesNotContain("UpsertReminderRowKey", keys);

        foreach (string table in new[] { "orleansquery", "orleansmembershipversiontable", "orleansmembershiptable", "orleansstorage" })
            Assert.True(await ScalarAsync<bool>(database.ConnectionString, $"SELECT to_regclass('{table}') IS NOT NULL"), table);
        // Each query registered once (the scripts ran once, not once per caller).
        Assert.Equal(keys.Count, await ScalarAsync<long>(database.ConnectionString, "SELECT count(*) FROM orleansquery"));
    }

    [PostgresFact]
    public async Task EnsureCreated_adds_the_cleanup_query_to_a_schema_made_by_older_scripts()
    {
        await using TestPostgres.TemporaryDatabase database = await TestPostgres.CreateDatabaseAsync();
        await PostgresSchema.EnsureCreatedAsync(database.ConnectionString, CancellationToken.None);
        await ScalarAsync<int>(database.ConnectionString,
            "WITH d AS (DELETE FROM orleansquery WHERE querykey = 'CleanupDefunctSiloEntriesKey' RETURNING 1) SELECT count(*)::int FROM d");
        Assert.DoesNotContain("CleanupDefunctSiloEntriesKey", await QueryKeysAsync(database.ConnectionString));

        await PostgresSchema.EnsureCreatedAsync(database.ConnectionString, CancellationToken.None);

        Assert.Contains("CleanupDefunctSiloEntriesKey", await QueryKeysAsync(database.ConnectionString));
    }

    [PostgresFact]
    public async Task A_wrong_password_is_an_UllmeException_naming_host_and_database_but_not_the_password()
    {
        var builder = new NpgsqlConnectionStringBuilder(TestPostgres.ConnectionString!) { Password = "not-the-Secret-4711" };

        var error = await Assert.ThrowsAsync<UllmeException>(() =>
            PostgresSchema.EnsureCreatedAsync(builder.ConnectionString, CancellationToken.None));

        Assert.Contains($"{builder.Host}:{builder.Port}", error.Message);
        Assert.Contains($"'{builder.Database}'", error.Message);
        Assert.Contains("28P01", error.Message); // invalid_password
        Assert.DoesNotContain("not-the-Secret-4711", error.Message);
    }

    [Fact]
    public async Task An_unreachable_server_is_an_UllmeException_naming_host_and_database()
    {
        // Port 1 on loopback: nothing listens there, the connection is refused at once.
        var error = await Assert.ThrowsAsync<UllmeException>(() => PostgresSchema.EnsureCreatedAsync(
            "Host=127.0.0.1;Port=1;Username=u;Password=hunter2-secret;Database=orleans_db;Timeout=5", CancellationToken.None));

        Assert.Contains("127.0.0.1:1", error.Message);
        Assert.Contains("'orleans_db'", error.Message);
        Assert.DoesNotContain("hunter2-secret", error.Message);
    }

    [Theory]
    [InlineData("Host=db;Username=u;Password=p;Database=orleans", true)]
    [InlineData("server = db.example.com; Port=5433; Database=orleans", true)]
    [InlineData("postgres://u:p@db/orleans", true)]
    [InlineData("PostgreSQL://db", true)]
    [InlineData("localhost", false)]
    [InlineData("127.0.0.1:11111", false)]
    [InlineData("/var/lib/ullme/cluster", false)]
    [InlineData("Data Source=cluster.db", false)]
    public void IsPostgres_tells_connection_strings_from_other_cluster_forms(string cluster, bool expected)
    {
        Assert.Equal(expected, PostgresSchema.IsPostgres(cluster));
    }

    [Fact]
    public void A_URI_becomes_a_keyword_connection_string()
    {
        var builder = new NpgsqlConnectionStringBuilder(PostgresSchema.ToConnectionString(
            "postgresql://ull%40me:p%3Ass%2Fw@db.example.com:5433/orleans%20db?sslmode=verify-full&application_name=silo%201"));

        Assert.Equal("db.example.com", builder.Host);
        Assert.Equal(5433, builder.Port);
        Assert.Equal("ull@me", builder.Username);
        Assert.Equal("p:ss/w", builder.Password);
        Assert.Equal("orleans db", builder.Database);
        Assert.Equal(SslMode.VerifyFull, builder.SslMode);
        Assert.Equal("silo 1", builder.ApplicationName);
    }

    [Fact]
    public void URIs_with_IPv6_several_hosts_or_no_port_convert()
    {
        var ipv6 = new NpgsqlConnectionStringBuilder(PostgresSchema.ToConnectionString("postgres://u@[::1]:6000/d"));
        Assert.Equal("::1", ipv6.Host);
        Assert.Equal(6000, ipv6.Port);

        var several = new NpgsqlConnectionStringBuilder(PostgresSchema.ToConnectionString("postgres://u:p@a:5001,b/d"));
        Assert.Equal("a:5001,b", several.Host);

        var plain = new NpgsqlConnectionStringBuilder(PostgresSchema.ToConnectionString("postgres://db"));
        Assert.Equal("db", plain.Host);
        Assert.Equal(5432, plain.Port);
        Assert.Null(plain.Database);
    }

    [Fact]
    public void A_bad_URI_is_an_UllmeException_without_the_password()
    {
        var badPort = Assert.Throws<UllmeException>(() => PostgresSchema.ToConnectionString("postgres://u:topsecret@db:99999/d"));
        Assert.DoesNotContain("topsecret", badPort.Message);
        Assert.Throws<UllmeException>(() => PostgresSchema.ToConnectionString("postgres://u:topsecret@/d"));
        var badParameter = Assert.Throws<UllmeException>(() => PostgresSchema.ToConnectionString("postgres://u:topsecret@db/d?no_such_thing=1"));
        Assert.Contains("no_such_thing", badParameter.Message);
        Assert.DoesNotContain("topsecret", badParameter.Message);
    }

    [Fact]
    public void The_embedded_scripts_are_the_dotnet_orleans_ones_and_register_the_required_queries()
    {
        string all = string.Concat(PostgresSchema.Scripts.Select(s => PostgresSchema.ReadScript(s.Script)));
        Assert.Contains("CREATE TABLE OrleansQuery", all);
        var registered = Regex.Matches(all, @"INSERT INTO OrleansQuery\(QueryKey, QueryText\)\s*VALUES\s*\(\s*'(\w+)'")
            .Select(m => m.Groups[1].Value).ToHashSet();
        Assert.Subset(registered, ClusteringProviderKeys());
        Assert.Subset(registered, PersistenceProviderKeys());
        Assert.Contains("CleanupDefunctSiloEntriesKey", PostgresSchema.ReadScript(PostgresSchema.CleanupDefunctSiloEntriesMigration));
    }

    private static HashSet<string> Set(params string[] keys) => new(keys, StringComparer.Ordinal);

    /// <summary>The properties of the clustering provider's DbStoredQueries: each one a query it requires at start-up.</summary>
    private static HashSet<string> ClusteringProviderKeys()
    {
        Type storedQueries = typeof(global::Orleans.Configuration.AdoNetClusteringSiloOptions).Assembly
            .GetType("Orleans.Clustering.AdoNet.Storage.DbStoredQueries", throwOnError: true)!;
        var keys = storedQueries.GetProperties(BindingFlags.Instance | BindingFlags.NonPublic).Select(p => p.Name).ToHashSet();
        Assert.Contains("InsertMembershipKey", keys);
        return keys;
    }

    /// <summary>The queries the persistence provider reads at start-up (its DefaultInitializationQuery).</summary>
    private static HashSet<string> PersistenceProviderKeys()
    {
        var keys = Regex.Matches(global::Orleans.Storage.AdoNetGrainStorage.DefaultInitializationQuery, @"QueryKey = '(\w+)'")
            .Select(m => m.Groups[1].Value).ToHashSet();
        Assert.Contains("WriteToStorageKey", keys);
        return keys;
    }

    private static async Task<HashSet<string>> QueryKeysAsync(string connectionString)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT querykey FROM orleansquery", connection);
        await using var reader = await command.ExecuteReaderAsync();
        var keys = new HashSet<string>(StringComparer.Ordinal);
        while (await reader.ReadAsync()) keys.Add(reader.GetString(0));
        return keys;
    }

    private static async Task<T> ScalarAsync<T>(string connectionString, string sql)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        return (T)(await command.ExecuteScalarAsync())!;
    }
}
