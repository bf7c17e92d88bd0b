using System.Diagnostics;
using System.Xml.Linq;
using Microsoft.CodeAnalysis;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.Inference;

/// <summary>
/// An application that references the library but no native libtorch backend package (as a user gets by adding only
/// the library package): its first model load must be one <see cref="UllmeException"/> naming the packages to add,
/// not a <see cref="TypeInitializationException"/> that aborts the process (exit 134).
/// </summary>
public sealed class NativeBackendTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-nonative-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private const string Program = """
        using Ullme.MLNet;
        using Ullme.MLNet.Inference;

        int code = 0;
        for (int attempt = 0; attempt < 2; attempt++)   // the second use gives the same clear error
        {
            try
            {
                using var model = UllmeModel.Load(args[0]);
                Console.WriteLine("LOADED");
                return 0;
            }
            catch (UllmeException e)
            {
                Console.Error.WriteLine($"ULLME{attempt}: {e.Message}");
                code = 3;
            }
        }
        try { UllmeRuntime.SetThreads(1); }
        catch (UllmeException e) { Console.Error.WriteLine($"ULLME-THREADS: {e.Message}"); }
        return code;
        """;

    [Fact]
    public async Task AppWithoutNativeBackend_GetsOneUllmeExceptionNamingThePackages()
    {
        // The app folder holds only managed assemblies: ours and TorchSharp's, no runtimes/*/native.
        string bin = AppContext.BaseDirectory;
        foreach (string dll in new[] { "Ullme.MLNet.Core.dll", "TorchSharp.dll", "Microsoft.ML.Tokenizers.dll" })
            File.Copy(Path.Combine(bin, dll), Path.Combine(_dir, dll));
        Assert.Empty(Directory.GetFiles(_dir, "*.so*", SearchOption.AllDirectories));

        var compilation = CSharpCompiler.Create("NoNativeApp", [("Program.cs", Program)],
            CSharpCompiler.FrameworkPlus(Path.Combine(_dir, "Ullme.MLNet.Core.dll"), Path.Combine(_dir, "TorchSharp.dll")));
        string app = Path.Combine(_dir, "NoNativeApp.dll");
        var emit = compilation.Emit(app);
        Assert.True(emit.Success, string.Join("\n", emit.Diagnostics.Where(d => d.Severity == DiagnosticSeverity.Error)));
        // Microsoft.Extensions.Logging.Abstractions comes with the ASP.NET Core shared framework here.
        string v = Environment.Version.ToString(2) + ".0";
        File.WriteAllText(Path.Combine(_dir, "NoNativeApp.runtimeconfig.json"),
            "{\"runtimeOptions\": {\"tfm\": \"net10.0\", \"frameworks\": [" +
            $"{{\"name\": \"Microsoft.NETCore.App\", \"version\": \"{v}\"}}, {{\"name\": \"Microsoft.AspNetCore.App\", \"version\": \"{v}\"}}]}}}}");

        string model = Assets.Available ? Assets.Stories260K : "default";
        var psi = new ProcessStartInfo("dotnet", ["exec", app, model])
        {
            RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = _dir,
        };
        psi.Environment.Remove("LD_LIBRARY_PATH");
        psi.Environment.Remove("LD_PRELOAD");
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderrTask = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        await process.WaitForExitAsync(timeout.Token);
        string stderr = await stderrTask;
        string output = await stdout + stderr;

        Assert.NotEqual(134, process.ExitCode);
        Assert.True(process.ExitCode == 3, $"exit {process.ExitCode}:\n{output}");
        Assert.DoesNotContain("TypeInitializationException", output);
        Assert.DoesNotContain("Unhandled exception", output);
        foreach (string line in new[] { "ULLME0: ", "ULLME1: ", "ULLME-THREADS: " })
        {
            string message = stderr.Split('\n').Single(l => l.StartsWith(line, StringComparison.Ordinal));
            Assert.Contains($"dotnet add package TorchSharp-cpu --version {NativeBackend.TorchSharpVersion}", message);
            Assert.Contains($"libtorch-cpu-linux-x64 --version {NativeBackend.LibTorchVersion}", message);
        }
    }

    /// <summary>The versions the message names are the ones this repository builds with.</summary>
    [Fact]
    public void MessageNamesTheVersionsOfDirectoryPackagesProps()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Directory.Packages.props"))) dir = dir.Parent;
        Assert.NotNull(dir);
        var versions = XDocument.Load(Path.Combine(dir!.FullName, "Directory.Packages.props")).Descendants("PackageVersion")
            .ToDictionary(e => (string)e.Attribute("Include")!, e => (string)e.Attribute("Version")!);
        Assert.Equal(NativeBackend.TorchSharpVersion, versions["TorchSharp"]);
        Assert.Equal(NativeBackend.LibTorchVersion, versions["libtorch-cpu-linux-x64"]);
        Assert.True(NativeBackend.IsMissingNative(new TypeInitializationException("TorchSharp.torch", new NotSupportedException("x"))));
        Assert.True(NativeBackend.IsMissingNative(new InvalidOperationException("outer", new DllNotFoundException("LibTorchSharp"))));
        Assert.False(NativeBackend.IsMissingNative(new InvalidOperationException("unrelated")));
    }
}
