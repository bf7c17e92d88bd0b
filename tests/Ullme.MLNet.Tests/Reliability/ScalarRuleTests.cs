using Mono.Cecil;
using TorchSharp;
using Ullme.MLNet.Tensors;
using static TorchSharp.torch;

namespace Ullme.MLNet.Tests.Reliability;

/// <summary>
/// The Scalar rule (docs/reliability.md): no call in the library hands libtorch a <see cref="Scalar"/> that nobody
/// holds for the whole native call. The check reads the compiled IL of every Ullme.* library assembly next to the
/// tests, so it fails on new code whatever its shape (operators, implicit conversions, TorchSharp overloads that make
/// their own temporaries), and lists file:line, method and IL offset of each offending call.
/// </summary>
public sealed class ScalarRuleTests
{
    /// <summary>A known exception to the rule: every finding in <see cref="SourceFile"/> (a path suffix), or only in
    /// <see cref="Method"/> when given, is accepted for <see cref="Reason"/>.</summary>
    public sealed record Allowed(string SourceFile, string? Method, string Reason);

    /// <summary>
    /// The known exceptions, each with its justification. An entry that no longer matches anything fails the test,
    /// so the list shrinks as the code is fixed.
    /// </summary>
    public static readonly Allowed[] AllowList =
    [
    ];

    private static readonly Lazy<ScalarLifetimeScanner> Scanner = new(() => new ScalarLifetimeScanner(typeof(torch).Assembly.Location));

    /// <summary>The Ullme.* library assemblies in the test output (not the tests themselves).</summary>
    public static IReadOnlyList<string> LibraryAssemblies() =>
        Directory.GetFiles(AppContext.BaseDirectory, "Ullme.*.dll")
            .Where(p => !Path.GetFileName(p).Contains(".Tests", StringComparison.Ordinal))
            .Order(StringComparer.Ordinal)
            .ToList();

    [Fact]
    public void Library_hands_libtorch_no_Scalar_that_nobody_holds()
    {
        var assemblies = LibraryAssemblies();
        Assert.Contains(assemblies, a => Path.GetFileName(a) == "Ullme.MLNet.dll");
        var findings = assemblies.SelectMany(a => Scanner.Value.ScanAssembly(a)).ToList();
        Assert.True(File.Exists(Path.ChangeExtension(assemblies.First(a => Path.GetFileName(a) == "Ullme.MLNet.dll"), ".pdb")),
            "no Ullme.MLNet.pdb next to the dll: the scan could not name source lines");

        var used = new HashSet<Allowed>();
        var offending = new List<ScalarFinding>();
        foreach (var f in findings)
        {
            var entry = AllowList.FirstOrDefault(a => Matches(a, f));
            if (entry is null) offending.Add(f);
            else used.Add(entry);
        }
        Assert.True(offending.Count == 0,
            $"{offending.Count} call(s) hand libtorch a temporary TorchSharp.Scalar (a GC on another thread can free it mid-call). " +
            "Use Ullme.MLNet.Tensors.ScalarOps (x.Mul(0.5), a.Add(b), t.MaskedFill(m, v), ...), Scalars.One, or `using var s = v.ToScalar()`; " +
            "see docs/reliability.md, \"The Scalar rule\":\n" + string.Join("\n", offending.Distinct()));
        var stale = AllowList.Where(a => !used.Contains(a)).ToList();
        Assert.True(stale.Count == 0, "Allow-list entries that match nothing any more (remove them):\n" + string.Join("\n", stale));
    }

    private static bool Matches(Allowed a, ScalarFinding f) =>
        f.Source is not null
        && f.Source.Replace('\\', '/').EndsWith("/" + a.SourceFile, StringComparison.Ordinal)
        && (a.Method is null || f.Method == a.Method);

    [Fact]
    public void Scanner_flags_every_way_a_temporary_Scalar_reaches_libtorch_and_accepts_held_ones()
    {
        var path = typeof(ScalarRuleTests).Assembly.Location;
        var findings = Scanner.Value.ScanAssembly(path, m => IsIn(m.DeclaringType, typeof(Samples)))
            .GroupBy(f => f.Method[(f.Method.LastIndexOf('.') + 1)..])
            .ToDictionary(g => g.Key, g => g.ToList());
        string samples = typeof(Samples).FullName!.Replace('+', '/');
        foreach (var m in typeof(Samples).GetMethods(System.Reflection.BindingFlags.Static | System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Public)
                     .Where(m => m.DeclaringType == typeof(Samples)))
        {
            var found = findings.Where(kv => kv.Key == m.Name || kv.Key.StartsWith("<" + m.Name + ">", StringComparison.Ordinal))
                .SelectMany(kv => kv.Value).ToList() is { Count: > 0 } list ? list : null;
            if (m.Name.StartsWith("Bad", StringComparison.Ordinal))
                Assert.True(found is { Count: > 0 }, $"{samples}.{m.Name} hands libtorch a temporary Scalar, but the scan found nothing");
            else if (m.Name.StartsWith("Good", StringComparison.Ordinal))
                Assert.True(found is null, $"{samples}.{m.Name} holds its Scalars, but the scan reported:\n" + string.Join("\n", found ?? []));
        }
        // A lambda's body is a method of its own (a closure class): found and named after the user method.
        Assert.Contains(findings.Keys, k => k.Contains("BadInLambda", StringComparison.Ordinal));
        // Findings name the file, the line and the IL offset.
        var one = findings["BadOperatorWithNumber"].Single();
        Assert.EndsWith("ScalarRuleTests.cs", one.Source);
        Assert.True(one.Line > 0 && one.IlOffset > 0);
        Assert.Contains("op_Multiply", one.Callee);
    }

    private static bool IsIn(TypeDefinition? t, Type outer)
    {
        for (; t is not null; t = t.DeclaringType)
            if (t.FullName == outer.FullName!.Replace('+', '/')) return true;
        return false;
    }

    [Fact]
    public void TorchSharp_wrappers_that_make_their_own_temporaries_are_known()
    {
        var unsafeMethods = Scanner.Value.UnsafeTorchSharpMethods.Keys.Select(ScalarLifetimeScanner.Short).ToHashSet();
        // Found by reading TorchSharp 0.107's IL: each hides an implicit Scalar (alpha 1, exponent 2, start 0 / step 1, or the operand).
        Assert.Contains("torch/Tensor::add(torch/Tensor)", unsafeMethods);
        Assert.Contains("torch/Tensor::add_(torch/Tensor)", unsafeMethods);
        Assert.Contains("torch/Tensor::add(Scalar)", unsafeMethods);
        Assert.Contains("torch/Tensor::op_Addition(torch/Tensor,torch/Tensor)", unsafeMethods);
        Assert.Contains("torch/Tensor::op_Multiply(torch/Tensor,Double)", unsafeMethods);
        Assert.Contains("torch/Tensor::op_Subtraction(Int32,torch/Tensor)", unsafeMethods);
        Assert.Contains("torch/Tensor::square()", unsafeMethods);
        Assert.Contains("torch/Tensor::addcdiv_(torch/Tensor,torch/Tensor)", unsafeMethods);
        Assert.Contains("torch::arange(Scalar,Nullable`1<torch/ScalarType>,torch/Device,Boolean)", unsafeMethods);
        // ... and the direct wrappers, which only read the handle of the Scalar they are given, are not.
        Assert.DoesNotContain("torch/Tensor::mul(Scalar)", unsafeMethods);
        Assert.DoesNotContain("torch/Tensor::add(torch/Tensor,Scalar)", unsafeMethods);
        Assert.DoesNotContain("torch/Tensor::sub(torch/Tensor)", unsafeMethods);
        Assert.DoesNotContain("torch/Tensor::op_Multiply(torch/Tensor,torch/Tensor)", unsafeMethods);
        Assert.DoesNotContain("torch/Tensor::masked_fill(torch/Tensor,Scalar)", unsafeMethods);
    }

    /// <summary>IL samples for the scanner (never run). "Bad…" must be flagged, "Good…" must not.</summary>
    internal static class Samples
    {
        internal static Tensor BadOperatorWithNumber(Tensor x) => x * 0.5;

        internal static Tensor BadTensorPlusTensor(Tensor x, Tensor y) => x + y;

        internal static Tensor BadImplicitConversionAtTheCall(Tensor x, Tensor mask) => x.masked_fill(mask, -1.0);

        internal static Tensor BadHiddenAlpha(Tensor x, Tensor y) => x.add_(y);

        internal static Tensor BadSquare(Tensor x) => x.square();

        internal static Tensor BadArange(long n) => arange(n);

        internal static Tensor BadLocalNeverDisposed(Tensor x)
        {
            var s = 0.5.ToScalar();
            return x.mul(s);
        }

        internal static Tensor BadScalarOfUnknownLifetime(Tensor x) => x.mul(Make(0.5));

        internal static Tensor BadOwnMethodTakingScalar(Tensor x) => Scale(x, 2.0);

        internal static Tensor BadConditional(Tensor x, bool flag, Scalar held) => x.mul(flag ? held : 3.0);

        internal static Func<Tensor, Tensor> BadInLambda() => t => t * 2.0;

        internal static Tensor GoodUsing(Tensor x)
        {
            using var s = 0.5.ToScalar();
            return x.mul(s);
        }

        internal static Tensor GoodKeepAlive(Tensor x)
        {
            var s = 0.5.ToScalar();
            var r = x.mul(s);
            GC.KeepAlive(s);
            return r;
        }

        internal static Tensor GoodCached(Tensor x, Tensor y) => x.add(y, Scalars.One);

        internal static Tensor GoodScalarOps(Tensor x, Tensor y, Tensor mask) =>
            x.Mul(0.5).Add(y).MaskedFill(mask, -1.0).ClampMin(0).Square();

        internal static Tensor GoodTensorOperands(Tensor x, Tensor y) => (x * y - y) / x;

        internal static Tensor GoodParameter(Tensor x, Scalar s) => x.mul(s);

        internal static Tensor GoodField(Tensor x) => x.mul(Half);

        private static readonly Scalar Half = 0.5.ToScalar();

        private static Scalar Make(double v) => v.ToScalar();

        private static Tensor Scale(Tensor x, Scalar s) => x.mul(s);
    }
}
