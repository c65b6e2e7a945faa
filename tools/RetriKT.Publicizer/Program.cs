// Publicizer: copies .NET assemblies and flips the accessibility flags of every type, method and field to public.
//
// Why: ML.NET keeps the persistence API (ModelSaveContext members, ModelLoadContext, VersionInfo,
// LoadableClassAttribute, ...) internal. RetriKT.MLNet compiles against these patched copies and declares
// [IgnoresAccessChecksTo] so that the runtime (which loads the real, unpatched ML.NET) skips the access checks.
//
// How: only fixed-width flag columns of the TypeDef, MethodDef and Field metadata tables are rewritten in place,
// so the file size, IL, strong-name identity and every offset stay the same.
//
// Usage: RetriKT.Publicizer <output-folder> <assembly.dll>...
using System.Reflection.Metadata;
using System.Reflection.Metadata.Ecma335;
using System.Reflection.PortableExecutable;

if (args.Length < 2)
{
    Console.Error.WriteLine("usage: RetriKT.Publicizer <output-folder> <assembly.dll>...");
    return 2;
}

var outputFolder = args[0];
Directory.CreateDirectory(outputFolder);
foreach (var source in args.Skip(1))
{
    var target = Path.Combine(outputFolder, Path.GetFileName(source));
    if (File.Exists(target) && File.GetLastWriteTimeUtc(target) >= File.GetLastWriteTimeUtc(source))
        continue; // up to date: keeps incremental builds fast
    var bytes = File.ReadAllBytes(source);
    int changed = Publicize(bytes);
    var temp = target + ".tmp";
    File.WriteAllBytes(temp, bytes);
    File.Move(temp, target, overwrite: true);
    Console.WriteLine($"RetriKT.Publicizer: {Path.GetFileName(source)}: {changed} flags made public -> {target}");
}
return 0;

static int Publicize(byte[] image)
{
    int metadataStart;
    (int Offset, int RowSize, int Rows) types, methods, fields;
    using (var pe = new PEReader(new MemoryStream(image, writable: false)))
    {
        var md = pe.GetMetadataReader();
        metadataStart = pe.PEHeaders.MetadataStartOffset;
        (int, int, int) Table(TableIndex t) => (md.GetTableMetadataOffset(t), md.GetTableRowSize(t), md.GetTableRowCount(t));
        types = Table(TableIndex.TypeDef);
        methods = Table(TableIndex.MethodDef);
        fields = Table(TableIndex.Field);
    }

    int changed = 0;
    // TypeDef.Flags is a u32 at column 0. Visibility (mask 0x7): 0 NotPublic -> 1 Public; nested 3..7 -> 2 NestedPublic.
    for (int row = 0; row < types.Rows; row++)
    {
        int at = metadataStart + types.Offset + row * types.RowSize;
        uint flags = BitConverter.ToUInt32(image, at);
        uint visibility = flags & 7u;
        uint wanted = visibility == 0u ? 1u : visibility >= 3u ? 2u : visibility;
        if (wanted == visibility) continue;
        BitConverter.GetBytes((flags & ~7u) | wanted).CopyTo(image, at);
        changed++;
    }

    // Member access (mask 0x7): 2 FamANDAssem, 3 Assembly, 5 FamORAssem -> 6 Public. Private (1) stays private:
    // nothing of ours may depend on ML.NET's private members.
    void Open(int at)
    {
        ushort flags = BitConverter.ToUInt16(image, at);
        int access = flags & 7;
        if (access is not (2 or 3 or 5)) return;
        BitConverter.GetBytes((ushort)((flags & ~7) | 6)).CopyTo(image, at);
        changed++;
    }
    for (int row = 0; row < methods.Rows; row++)
        Open(metadataStart + methods.Offset + row * methods.RowSize + 6); // MethodDef: RVA u32, ImplFlags u16, Flags u16
    for (int row = 0; row < fields.Rows; row++)
        Open(metadataStart + fields.Offset + row * fields.RowSize);       // Field: Flags u16
    return changed;
}
