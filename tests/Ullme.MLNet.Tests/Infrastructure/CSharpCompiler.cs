using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;

namespace Ullme.MLNet.Tests.Infrastructure;

/// <summary>
/// Compiles C# source with Roslyn against the assemblies this test process runs with (the framework plus every
/// built project and package the tests reference), as a new console project would: top-level statements allowed,
/// the SDK's implicit usings of <c>dotnet new console</c>, nullable enabled.
/// </summary>
internal static class CSharpCompiler
{
    /// <summary>The implicit usings of a <c>dotnet new console</c> project (ImplicitUsings=enable).</summary>
    public const string ImplicitUsings = """
        global using System;
        global using System.Collections.Generic;
        global using System.IO;
        global using System.Linq;
        global using System.Net.Http;
        global using System.Threading;
        global using System.Threading.Tasks;
        """;

    private static readonly Lazy<MetadataReference[]> AllReferences = new(() =>
        ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!).Split(Path.PathSeparator)
            .Where(p => p.EndsWith(".dll", StringComparison.OrdinalIgnoreCase) && File.Exists(p))
            .Select(p => (MetadataReference)MetadataReference.CreateFromFile(p)).ToArray());

    /// <summary>The framework's reference set only, plus <paramref name="extra"/> assembly files.</summary>
    public static MetadataReference[] FrameworkPlus(params string[] extra)
    {
        string framework = Path.GetDirectoryName(typeof(object).Assembly.Location)!;
        return Directory.GetFiles(framework, "*.dll")
            .Where(f => !Path.GetFileName(f).StartsWith("Microsoft.DiaSymReader", StringComparison.Ordinal))
            .Select(f => { try { return MetadataReference.CreateFromFile(f); } catch (BadImageFormatException) { return null; } })
            .Where(r => r is not null).Cast<MetadataReference>()
            .Concat(extra.Select(e => MetadataReference.CreateFromFile(e))).ToArray();
    }

    public static CSharpCompilation Create(string assemblyName, IEnumerable<(string Path, string Source)> files,
        IEnumerable<MetadataReference>? references = null, OutputKind kind = OutputKind.ConsoleApplication)
    {
        var parse = new CSharpParseOptions(LanguageVersion.Preview);
        var trees = files.Prepend((Path: "ImplicitUsings.g.cs", Source: ImplicitUsings))
            .Select(f => CSharpSyntaxTree.ParseText(f.Source, parse, f.Path)).ToList();
        return CSharpCompilation.Create(assemblyName, trees, references ?? AllReferences.Value,
            new CSharpCompilationOptions(kind, nullableContextOptions: NullableContextOptions.Enable,
                optimizationLevel: OptimizationLevel.Release));
    }

    /// <summary>The compilation's errors (warnings ignored), one line each with file and position.</summary>
    public static List<string> Errors(Compilation compilation) =>
        compilation.GetDiagnostics().Where(d => d.Severity == DiagnosticSeverity.Error).Select(d => d.ToString()).ToList();
}
