using Mono.Cecil;
using Mono.Cecil.Cil;

namespace RetriKT.MLNet.Tests.Foundation;

/// <summary>
/// Keeps ML.NET internals inside the bridge: scans each compiled library (IL, signatures, base types, attributes) and
/// fails when a type outside namespace <c>RetriKT.MLNet.Bridge</c> uses a member or type of Microsoft.ML.Core/Data
/// that is not public in the real assemblies. The publicized compile references hide such mistakes from the compiler.
/// </summary>
public class BridgeAuditTests
{
    private const string BridgeNamespace = "RetriKT.MLNet.Bridge";
    private static readonly string[] Guarded = ["Microsoft.ML.Core", "Microsoft.ML.Data"];

    [Theory]
    [InlineData("RetriKT.MLNet.dll")]          // the runtime
    [InlineData("RetriKT.MLNet.Training.dll")] // the training assembly (its own loaders)
    public void OnlyTheBridgeTouchesMlNetInternals(string assembly)
    {
        var resolver = new DefaultAssemblyResolver();
        resolver.AddSearchDirectory(AppContext.BaseDirectory);
        using var library = AssemblyDefinition.ReadAssembly(Path.Combine(AppContext.BaseDirectory, assembly),
            new ReaderParameters { AssemblyResolver = resolver });
        var violations = new SortedSet<string>();
        int bridgeUses = 0;

        foreach (var type in library.MainModule.GetTypes())
        {
            bool inBridge = Outermost(type).Namespace == BridgeNamespace;
            void Check(MemberReference? reference, string where)
            {
                var problem = reference is null ? null : NonPublicGuarded(reference);
                if (problem is null) return;
                if (inBridge) bridgeUses++;
                else violations.Add($"{type.FullName} ({where}) uses {problem}");
            }

            Check(type.BaseType, "base type");
            foreach (var i in type.Interfaces) Check(i.InterfaceType, "interface");
            foreach (var f in type.Fields) Check(f.FieldType, "field " + f.Name);
            foreach (var m in type.Methods)
            {
                Check(m.ReturnType, m.Name);
                foreach (var p in m.Parameters) Check(p.ParameterType, m.Name);
                foreach (var o in m.Overrides) Check(o, m.Name + " override");
                if (!m.HasBody) continue;
                foreach (var v in m.Body.Variables) Check(v.VariableType, m.Name + " local");
                foreach (var instruction in m.Body.Instructions)
                    if (instruction.Operand is MemberReference member) Check(member, m.Name);
            }
        }
        foreach (var attribute in library.CustomAttributes.Concat(library.MainModule.CustomAttributes))
            if (NonPublicGuarded(attribute.Constructor) is not null) bridgeUses++; // assembly-level: registrations live in Bridge/Loaders.cs and Bridge/TrainingLoaders.cs

        Assert.True(violations.Count == 0, "ML.NET internals used outside the bridge:\n" + string.Join("\n", violations));
        Assert.True(bridgeUses > 0, "the audit found no internal use at all: it is not looking at the right assembly");
    }

    private static TypeDefinition Outermost(TypeDefinition type)
    {
        while (type.DeclaringType is not null) type = type.DeclaringType;
        return type;
    }

    /// <summary>Description of the first non-public guarded member or type <paramref name="reference"/> reaches, or null.</summary>
    private static string? NonPublicGuarded(MemberReference reference)
    {
        switch (reference)
        {
            case GenericInstanceType git:
                return NonPublicGuarded(git.ElementType) ?? git.GenericArguments.Select(NonPublicGuarded).FirstOrDefault(p => p is not null);
            case TypeSpecification spec:
                return NonPublicGuarded(spec.ElementType);
            case GenericParameter:
                return null;
            case TypeReference typeRef:
            {
                if (!IsGuarded(typeRef.Scope)) return null;
                var def = typeRef.Resolve();
                return def is null ? null : TypeIsVisible(def) ? null : $"non-public type {def.FullName}";
            }
            case MethodReference methodRef:
            {
                var declaring = NonPublicGuarded(methodRef.DeclaringType);
                if (declaring is not null) return declaring;
                if (!IsGuarded(methodRef.DeclaringType.Scope)) return null;
                var def = methodRef.Resolve();
                return def is null || def.IsPublic || def.IsFamily ? null : $"non-public method {def.FullName}";
            }
            case FieldReference fieldRef:
            {
                var declaring = NonPublicGuarded(fieldRef.DeclaringType);
                if (declaring is not null) return declaring;
                if (!IsGuarded(fieldRef.DeclaringType.Scope)) return null;
                var def = fieldRef.Resolve();
                return def is null || def.IsPublic || def.IsFamily ? null : $"non-public field {def.FullName}";
            }
        }
        return null;
    }

    private static bool IsGuarded(IMetadataScope scope) => scope is AssemblyNameReference name && Guarded.Contains(name.Name);

    private static bool TypeIsVisible(TypeDefinition type)
    {
        for (var t = type; t is not null; t = t.DeclaringType)
            if (!(t.IsPublic || t.IsNestedPublic || t.IsNestedFamily)) return false;
        return true;
    }
}
