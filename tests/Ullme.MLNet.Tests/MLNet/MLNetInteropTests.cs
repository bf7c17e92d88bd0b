using Microsoft.ML;
using Mono.Cecil;
using Mono.Cecil.Cil;
using Ullme.MLNet.Transforms;

namespace Ullme.MLNet.Tests.MLNetIntegration;

/// <summary>
/// Guards the one place that uses ML.NET internals. If an ML.NET upgrade renames, removes or changes the signature of
/// an internal member we rely on, these tests fail and list the member; if someone uses an internal member outside
/// MLNetInterop, they fail and name the method.
/// </summary>
public sealed class MLNetInteropTests
{
    private static readonly string[] MLNetAssemblies = ["Microsoft.ML.Core", "Microsoft.ML.Data"];

    [Fact]
    public void Runtime_self_check_passes_against_the_loaded_MLNet()
    {
        // JIT-compiles every interop method: a missing member would surface here as a UllmeException.
        MLNetInterop.Verify();
    }

    [Fact]
    public void Internal_MLNet_members_are_used_only_in_MLNetInterop_and_all_exist_in_the_loaded_MLNet()
    {
        var usages = ScanInternalUsages(out var missing);

        Assert.True(missing.Count == 0, "ML.NET members used by Ullme.MLNet no longer exist:\n" + string.Join("\n", missing));
        var outside = usages.Where(u => u.User != nameof(MLNetInterop)).Select(u => $"{u.User}.{u.Method} uses {u.Member}").ToList();
        Assert.True(outside.Count == 0, "ML.NET internals used outside MLNetInterop.cs:\n" + string.Join("\n", outside));
        // The scan must see the internals we know we use, or it is scanning nothing.
        Assert.Contains(usages, u => u.Member.Contains("ModelLoadContext"));
        Assert.Contains(usages, u => u.Member.Contains("SaveBinaryStream"));
        Assert.Contains(usages, u => u.Member.Contains("IHostEnvironmentInternal"));
    }

    [Fact]
    public void Library_references_the_real_MLNet_assemblies_not_the_publicized_copies()
    {
        using var module = ModuleDefinition.ReadModule(typeof(UllmeEmbeddingTransformer).Assembly.Location);
        foreach (string name in MLNetAssemblies)
        {
            var reference = module.AssemblyReferences.Single(r => r.Name == name);
            var loaded = AppDomain.CurrentDomain.GetAssemblies().Select(a => a.GetName()).FirstOrDefault(a => a.Name == name)
                ?? System.Reflection.AssemblyName.GetAssemblyName(Path.Combine(AppContext.BaseDirectory, name + ".dll"));
            Assert.Equal(loaded.Version, reference.Version);
            Assert.Equal(Convert.ToHexString(loaded.GetPublicKeyToken()!), Convert.ToHexString(reference.PublicKeyToken));
        }
        // Nothing publicized is shipped next to the library.
        string bin = Path.GetDirectoryName(typeof(UllmeEmbeddingTransformer).Assembly.Location)!;
        Assert.False(Directory.Exists(Path.Combine(bin, "publicized")));
    }

    [Fact]
    public void LoadableClass_attribute_is_visible_to_MLNet_component_catalog()
    {
        // ML.NET reads [assembly: LoadableClass] through reflection; an inaccessible attribute type would be dropped
        // silently and Model.Load would then fail with "unknown loader".
        var attrs = typeof(UllmeEmbeddingTransformer).Assembly.GetCustomAttributes(false)
            .Where(a => a.GetType().Name == "LoadableClassAttribute").ToList();
        // One loader per transformer: UllmeEmbed and UllmeScore.
        Assert.Equal(2, attrs.Count);
        Assert.Equal(["UllmeEmbeddingTransformer", "UllmeScoreTransformer"],
            attrs.Select(a => ((Type)a.GetType().GetProperty("InstanceType")!.GetValue(a)!).Name).Order());
        var ml = new MLContext();
        ml.ComponentCatalog.RegisterAssembly(typeof(UllmeEmbeddingTransformer).Assembly);
    }

    private sealed record Usage(string User, string Method, string Member);

    private static List<Usage> ScanInternalUsages(out List<string> missing)
    {
        var resolver = new DefaultAssemblyResolver();
        resolver.AddSearchDirectory(AppContext.BaseDirectory);
        using var module = ModuleDefinition.ReadModule(typeof(UllmeEmbeddingTransformer).Assembly.Location,
            new ReaderParameters { AssemblyResolver = resolver });
        var usages = new List<Usage>();
        var missingSet = new SortedSet<string>();

        void Check(MemberReference member, TypeDefinition userType, string method)
        {
            var scopeType = member is TypeReference t ? t.GetElementType() : member.DeclaringType?.GetElementType();
            if (scopeType is null || !MLNetAssemblies.Contains(ScopeName(scopeType))) return;
            IMemberDefinition? resolved = member switch
            {
                TypeReference tr => tr.GetElementType().Resolve(),
                MethodReference mr => mr.Resolve(),
                FieldReference fr => fr.Resolve(),
                _ => null,
            };
            if (resolved is null)
            {
                missingSet.Add($"{member.FullName} (used by {userType.FullName}.{method})");
                return;
            }
            if (!IsPubliclyVisible(resolved))
                usages.Add(new Usage(TopLevel(userType).Name, method, member.FullName));
        }

        void CheckType(TypeReference? type, TypeDefinition userType, string method)
        {
            if (type is null) return;
            if (type is GenericInstanceType git) foreach (var a in git.GenericArguments) CheckType(a, userType, method);
            var element = type.GetElementType();
            if (element != type) { CheckType(element, userType, method); return; }
            Check(type, userType, method);
        }

        foreach (var attr in module.Assembly.CustomAttributes)
            CheckType(attr.AttributeType, module.Types.First(t => t.Name == nameof(MLNetInterop)), "[assembly]");

        foreach (var type in module.GetTypes())
        {
            CheckType(type.BaseType, type, "(base)");
            foreach (var i in type.Interfaces) CheckType(i.InterfaceType, type, "(interface)");
            foreach (var f in type.Fields) CheckType(f.FieldType, type, f.Name);
            foreach (var m in type.Methods)
            {
                CheckType(m.ReturnType, type, m.Name);
                foreach (var p in m.Parameters) CheckType(p.ParameterType, type, m.Name);
                if (!m.HasBody) continue;
                foreach (var v in m.Body.Variables) CheckType(v.VariableType, type, m.Name);
                foreach (Instruction ins in m.Body.Instructions)
                {
                    switch (ins.Operand)
                    {
                        case MethodReference mr:
                            Check(mr, type, m.Name);
                            CheckType(mr.DeclaringType, type, m.Name);
                            if (mr is GenericInstanceMethod gim) foreach (var a in gim.GenericArguments) CheckType(a, type, m.Name);
                            break;
                        case FieldReference fr:
                            Check(fr, type, m.Name);
                            CheckType(fr.DeclaringType, type, m.Name);
                            break;
                        case TypeReference tr:
                            CheckType(tr, type, m.Name);
                            break;
                    }
                }
            }
        }
        missing = [.. missingSet];
        return usages;
    }

    private static string ScopeName(TypeReference t) => t.Scope switch
    {
        AssemblyNameReference a => a.Name,
        ModuleDefinition md => md.Assembly.Name.Name,
        _ => t.Scope?.Name ?? "",
    };

    private static TypeDefinition TopLevel(TypeDefinition t)
    {
        while (t.DeclaringType is not null) t = t.DeclaringType;
        return t;
    }

    private static bool IsPubliclyVisible(IMemberDefinition member)
    {
        static bool TypeVisible(TypeDefinition t) =>
            t.IsNested ? (t.IsNestedPublic && TypeVisible(t.DeclaringType)) : t.IsPublic;

        return member switch
        {
            TypeDefinition t => TypeVisible(t),
            MethodDefinition m => TypeVisible(m.DeclaringType) && (m.IsPublic || m.IsFamily || m.IsFamilyOrAssembly),
            FieldDefinition f => TypeVisible(f.DeclaringType) && (f.IsPublic || f.IsFamily || f.IsFamilyOrAssembly),
            _ => true,
        };
    }
}
