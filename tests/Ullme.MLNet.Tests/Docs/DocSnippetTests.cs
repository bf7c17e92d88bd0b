using System.Text.RegularExpressions;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.Docs;

/// <summary>
/// Every <c>```csharp</c> block of README.md and docs/*.md compiles as pasted into a new console project
/// (<c>dotnet new console</c>: top-level statements, implicit usings, nullable) that references the packages the
/// docs describe (here: every assembly the tests run with). A block may use, without declaring them, only the few
/// names its file's <see cref="Preambles"/> entry declares (the data a reader brings, e.g. <c>trainData</c>); every
/// other name, <c>using</c> included, must be in the block itself, so <c>using</c> after a statement (CS1529) or a
/// missing <c>using Microsoft.Extensions.AI;</c> fails here.
/// </summary>
public sealed partial class DocSnippetTests
{
    /// <summary>
    /// The documented preamble: per file, the variables and types its snippets take as given (declared as static
    /// members of a class imported with <c>using static</c>, so a block that declares the same name hides them).
    /// </summary>
    private static readonly Dictionary<string, string> Preambles = new(StringComparer.Ordinal)
    {
        ["README.md"] = """
            public static Microsoft.ML.IDataView trainData => throw new NotImplementedException();   // rows with Text, Label
            public static Microsoft.ML.IDataView triplets => throw new NotImplementedException();    // Query, Positive, Negatives
            public static Microsoft.ML.MLContext ml => throw new NotImplementedException();
            public static Ullme.MLNet.Inference.UllmeModel model => throw new NotImplementedException();
            """,
        ["docs/evaluation.md"] = """
            public static IProgress<Ullme.MLNet.Evaluation.EvaluationProgress>? progress => null;
            public static string dataDir => "../shared/data";
            public static Ullme.MLNet.Inference.UllmeModel model => throw new NotImplementedException();
            """,
        ["docs/mlnet.md"] = """
            public static Microsoft.ML.MLContext ml => throw new NotImplementedException();
            public static Microsoft.ML.ITransformer model => throw new NotImplementedException();         // the fitted pipeline
            public static Microsoft.ML.IDataView trainData => throw new NotImplementedException();
            public static string[] texts => [];
            public sealed class Intent { public string Text { get; set; } = ""; public string Label { get; set; } = ""; }
            public sealed class Prediction { public uint PredictedLabel { get; set; } }
            """,
        ["docs/scoring.md"] = """
            public static Microsoft.ML.MLContext ml => throw new NotImplementedException();
            public static Microsoft.ML.IDataView data => throw new NotImplementedException();             // QueryId, Query, Passage
            public static Ullme.MLNet.Inference.Reranker reranker => throw new NotImplementedException();
            """,
        ["docs/training.md"] = """
            public sealed class Triplet { public string Query { get; set; } = ""; public string Positive { get; set; } = ""; public string[] Negatives { get; set; } = []; }
            public sealed class StsRow { public string Sentence1 { get; set; } = ""; public string Sentence2 { get; set; } = ""; public float Score { get; set; } }
            public static IEnumerable<Triplet> rows => [];
            public static IEnumerable<Triplet> triplets => [];
            public static IEnumerable<StsRow> stsRows => [];
            public static Microsoft.ML.IDataView intentDev => throw new NotImplementedException();       // Text, Label
            public static Microsoft.ML.DataViewSchema textSchema => throw new NotImplementedException(); // a Text column
            public static CancellationToken token => CancellationToken.None;
            """,
    };

    private static string RepositoryRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Ullme.MLNet.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("repository root (Ullme.MLNet.sln) not found");
    }

    [GeneratedRegex(@"^```csharp[ \t]*\r?\n(.*?)^```", RegexOptions.Singleline | RegexOptions.Multiline)]
    private static partial Regex CSharpBlock();

    /// <summary>The C# blocks of a markdown file: the line of each opening fence, and its code.</summary>
    internal static List<(int Line, string Code)> Blocks(string markdown) =>
        CSharpBlock().Matches(markdown)
            .Select(m => (markdown[..m.Index].Count(c => c == '\n') + 1, m.Groups[1].Value)).ToList();

    public static TheoryData<string> Files()
    {
        string root = RepositoryRoot();
        var files = new TheoryData<string>();
        foreach (string f in new[] { Path.Combine(root, "README.md") }.Concat(Directory.GetFiles(Path.Combine(root, "docs"), "*.md").Order(StringComparer.Ordinal)))
            if (Blocks(File.ReadAllText(f)).Count > 0) files.Add(Path.GetRelativePath(root, f));
        return files;
    }

    [Theory]
    [MemberData(nameof(Files))]
    public void CSharpSnippetsCompileAsPasted(string file)
    {
        string root = RepositoryRoot();
        var blocks = Blocks(File.ReadAllText(Path.Combine(root, file)));
        Assert.NotEmpty(blocks);
        var failures = new List<string>();
        foreach (var (line, code) in blocks)
        {
            var sources = new List<(string Path, string Source)> { ($"{file}:{line}", code) };
            if (Preambles.TryGetValue(file.Replace('\\', '/'), out string? preamble))
                sources.Add(("Preamble.cs", "global using static SnippetPreamble;\n#pragma warning disable IDE1006\npublic static class SnippetPreamble\n{\n" + preamble + "\n}\n"));
            var errors = CSharpCompiler.Errors(CSharpCompiler.Create("Snippet", sources));
            if (errors.Count > 0) failures.Add($"```csharp block at {file}:{line}:\n  " + string.Join("\n  ", errors));
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    /// <summary>The check itself: the two defects the README had fail it.</summary>
    [Fact]
    public void UsingAfterStatementsAndMissingUsingAreCaught()
    {
        const string late = "var x = 1;\nusing Ullme.MLNet.Extensions.AI;\nConsole.WriteLine(x);\n";
        Assert.Contains(CSharpCompiler.Errors(CSharpCompiler.Create("Late", [("late.cs", late)])), e => e.Contains("CS1529"));
        const string missing = "using Ullme.MLNet.Extensions.AI;\nMicrosoft.Extensions.AI.IEmbeddingGenerator<string, Embedding<float>> g = UllmeEmbeddingGenerator.Load(\"default\");\n";
        Assert.Contains(CSharpCompiler.Errors(CSharpCompiler.Create("Missing", [("missing.cs", missing)])), e => e.Contains("CS0246"));
        Assert.Equal(4, Blocks(File.ReadAllText(Path.Combine(RepositoryRoot(), "README.md"))).Count);
    }
}
