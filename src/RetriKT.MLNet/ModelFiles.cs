using Microsoft.ML;
using RetriKT.MLNet.Common;

namespace RetriKT.MLNet;

/// <summary>
/// Atomic saving and verified loading of model.zip files. <see cref="SaveAtomically"/> writes a new model beside the old
/// one and renames it over it, so a crash or a failed save never leaves a truncated model.zip where a working one was,
/// and a server watching the file (<c>PredictionEnginePool</c> hot reload) sees one complete change.
/// Verified loading: ML.NET does not check the zip's CRC, so a flipped bit in a part that is not
/// RetriKT's own (the input schema, a MapKeyToValue step) can load as a different model; RetriKT's own parts carry
/// their own checksums (checked by any <c>Model.Load</c>). <see cref="LoadVerified(ModelOperationsCatalog, string, out DataViewSchema)"/>
/// checks every entry's length and CRC-32 and reads the input schema first (ML.NET's own reader of it hangs on a length
/// that points past the part's end), then loads, and reports any failure as one
/// <see cref="InvalidDataException"/> line naming the file and the part.
/// </summary>
public static class ModelFiles
{
    /// <summary>
    /// Saves <paramref name="model"/> (with <paramref name="inputSchema"/>, as <see cref="ModelOperationsCatalog.Save(ITransformer, DataViewSchema, string)"/>
    /// does) to <paramref name="path"/> atomically: into a temp file of its own in the same folder, flushed to disk, then
    /// renamed over <paramref name="path"/>. If saving fails (a transformer that cannot be saved, a full disk, a kill), the
    /// file that was at <paramref name="path"/> is still there, whole, and no temp file is left. The folder is created
    /// when missing.
    /// </summary>
    /// <example><code>
    /// mlContext.Model.SaveAtomically(student, data.Schema, "model.zip");
    /// </code></example>
    public static void SaveAtomically(this ModelOperationsCatalog catalog, ITransformer model, DataViewSchema? inputSchema, string path)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentException.ThrowIfNullOrEmpty(path);
        AtomicFile.Write(path, stream => catalog.Save(model, inputSchema, stream));
    }

    /// <summary>Verifies every entry of the model file at <paramref name="path"/>, then loads it.</summary>
    public static ITransformer LoadVerified(this ModelOperationsCatalog catalog, string path, out DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(path);
        using var stream = File.OpenRead(path);
        return catalog.LoadVerified(stream, path, out inputSchema);
    }

    /// <summary>
    /// Verifies every entry of the model in <paramref name="stream"/> (<paramref name="name"/> names it in errors), then
    /// loads it. A stream that cannot seek (a network or decompression stream, which a plain <c>Model.Load</c> takes) is
    /// read into memory first, since the model is read twice.
    /// </summary>
    public static ITransformer LoadVerified(this ModelOperationsCatalog catalog, Stream stream, string name, out DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(stream);
        if (!stream.CanSeek)
        {
            using var buffer = new MemoryStream();
            stream.CopyTo(buffer);
            buffer.Position = 0;
            return catalog.LoadVerified(buffer, name, out inputSchema);
        }
        long start = stream.Position;
        Verify(stream, name);
        stream.Position = start;
        try
        {
            return catalog.Load(stream, out inputSchema);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new InvalidDataException($"{name}: {Describe(e)}", Innermost(e));
        }
    }

    /// <summary>Checks that every entry of the zip in <paramref name="stream"/> decompresses to its recorded length and CRC-32, and that its input schema reads.</summary>
    public static void Verify(Stream stream, string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        ModelZip.Verify(stream, name);
    }

    /// <summary>
    /// One printable line for a model-loading failure: the innermost meaningful exception (ML.NET's reflection
    /// layers removed), control characters replaced, at most a few hundred characters.
    /// </summary>
    public static string Describe(Exception exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        return ModelZip.Describe(exception);
    }

    /// <summary>The exception under reflection and aggregation wrappers.</summary>
    public static Exception Innermost(Exception exception) => ModelZip.Innermost(exception);
}
