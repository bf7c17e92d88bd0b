namespace Ullme.MLNet.Orleans.Jobs;

/// <summary>Names every silo and client of an Ullme cluster agrees on.</summary>
internal static class ClusterNames
{
    /// <summary>The grain storage provider that holds job state (a folder on localhost clusters, PostgreSQL on ADO.NET ones).</summary>
    public const string Storage = "ullme";

    /// <summary>Orleans' <c>ClusterOptions.ClusterId</c> and <c>ServiceId</c> unless <c>--cluster-id</c> says otherwise.</summary>
    public const string DefaultClusterId = "ullme";

    public const string ServiceId = "ullme-embedding";
}
