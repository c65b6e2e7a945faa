using System.Collections.Immutable;
using Microsoft.ML;
using RetriKT.MLNet.Teacher;
using static TorchSharp.torch;

namespace RetriKT.MLNet.SoftPrompt;

/// <summary>
/// Finds the teacher a saved soft-prompt model was tuned for by its content hash (SHA-256 of config and weights,
/// <see cref="TeacherModel.ContentHash"/>), so a model.zip moves between machines: the model records the teacher's
/// name (file or folder name) and hash; the teacher is looked for under that name in, in order,
/// <list type="number">
/// <item>the folders of <see cref="SearchIn"/> scopes around the load (innermost first), including the model's own
/// folder when loaded with <see cref="LoadWithTeacherSearch"/>;</item>
/// <item>the folders in the environment variable <see cref="FoldersVariable"/> (separated by the path separator);</item>
/// <item>the folder the teacher was tuned from (recorded at training: same-machine loads keep working);</item>
/// </list>
/// and the first candidate whose content hash matches is used. No match is one line naming the hash and every folder
/// searched. A candidate with the right name and another hash is reported as a different teacher; one that cannot be
/// loaded (damaged, half copied) is passed over, and named in the message when no teacher matches.
/// </summary>
public static class TeacherResolver
{
    /// <summary>Environment variable with teacher folders (path-separator separated), searched after the scoped ones.</summary>
    public const string FoldersVariable = "RETRIKT_TEACHER_DIRS";

    private static readonly AsyncLocal<ImmutableList<string>> Scoped = new();

    /// <summary>
    /// Adds <paramref name="folders"/> to the teacher search for the current flow until the returned scope is
    /// disposed: wrap <c>mlContext.Model.Load</c> of a model holding soft prompts.
    /// </summary>
    public static IDisposable SearchIn(params string[] folders)
    {
        ArgumentNullException.ThrowIfNull(folders);
        var before = Scoped.Value ?? [];
        Scoped.Value = before.InsertRange(0, folders.Where(f => !string.IsNullOrWhiteSpace(f)).Select(Path.GetFullPath));
        return new Scope(before);
    }

    /// <summary>
    /// Loads a model.zip whose soft prompts find their teacher beside the model (the model's folder) or in
    /// <paramref name="teacherDirectories"/>, then in the default places (see the class remarks). The file is verified
    /// first, as <see cref="ModelFiles.LoadVerified(ModelOperationsCatalog, string, out DataViewSchema)"/> does: a model
    /// moved to another machine is the file a copy may have damaged, and a plain load does not check the zip's CRCs (or
    /// hangs on a damaged input schema). A failure is one line naming the file.
    /// </summary>
    public static ITransformer LoadWithTeacherSearch(this ModelOperationsCatalog catalog, string modelPath, out DataViewSchema inputSchema,
        params string[] teacherDirectories)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentException.ThrowIfNullOrEmpty(modelPath);
        var folder = Path.GetDirectoryName(Path.GetFullPath(modelPath))!;
        using var _ = SearchIn([.. teacherDirectories, folder]);
        return catalog.LoadVerified(modelPath, out inputSchema);
    }

    /// <summary>The folders searched for a teacher recorded at <paramref name="recordedPath"/>, in order, without duplicates.</summary>
    internal static IReadOnlyList<string> Folders(string recordedPath)
    {
        var folders = new List<string>(Scoped.Value ?? []);
        var variable = Environment.GetEnvironmentVariable(FoldersVariable);
        if (!string.IsNullOrWhiteSpace(variable))
            folders.AddRange(variable.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(Path.GetFullPath));
        // The folder that holds the teacher, as Resolve takes its name: a directory recorded as given, "models/llama/",
        // has "models/llama" as its GetDirectoryName, and the teacher was looked for at models/llama/llama.
        if (Path.GetDirectoryName(WithoutTrailingSeparators(recordedPath)) is { Length: > 0 } recorded) folders.Add(recorded);
        return folders.Distinct(StringComparer.Ordinal).ToList();
    }

    /// <summary>
    /// The teacher named like <paramref name="recordedPath"/>'s last segment whose content hash is
    /// <paramref name="expectedHash"/>, loaded in <paramref name="dtype"/> on <paramref name="device"/>, and where it was found; throws one line
    /// when none is found.
    /// </summary>
    internal static (TeacherModel Teacher, string Path) Resolve(string recordedPath, string expectedHash, ScalarType dtype, Device? device)
    {
        var name = Path.GetFileName(WithoutTrailingSeparators(recordedPath));
        var folders = Folders(recordedPath);
        string? different = null;
        var unloadable = new List<string>();
        foreach (var folder in folders)
        {
            var candidate = Path.Combine(folder, name);
            if (!File.Exists(candidate) && !Directory.Exists(candidate)) continue;
            TeacherModel teacher;
            try
            {
                teacher = TeacherModel.Load(candidate, new TeacherLoadOptions { Device = device, DType = dtype });
            }
            catch (Exception e) when (e is InvalidDataException or IOException or UnauthorizedAccessException or NotSupportedException)
            {
                // A damaged or half-copied teacher of that name in one folder must not hide the right one in the next;
                // if none is found, the message says why this one was passed over.
                // The loaders' messages start with the path they read; others get it in front.
                var why = ModelFiles.Describe(e).TrimEnd('.');
                unloadable.Add(why.StartsWith(candidate, StringComparison.Ordinal) ? why : $"{candidate}: {why}");
                continue;
            }
            if (string.Equals(teacher.ContentHash, expectedHash, StringComparison.Ordinal))
            {
                teacher.RequiresGrad = false;
                return (teacher, candidate);
            }
            different ??= $"The teacher at '{candidate}' is not the one the soft prompts were tuned for: content hash {teacher.ContentHash}, expected {expectedHash}.";
            teacher.Dispose();
        }
        var passedOver = unloadable.Count == 0 ? "" : $" Could not be loaded: {string.Join("; ", unloadable)}.";
        if (different is not null)
            throw new InvalidDataException(different + $" No other teacher named '{name}' with that hash in: {string.Join(", ", folders)}.{passedOver}");
        if (unloadable.Count > 0)
            throw new InvalidDataException($"The soft prompts in this model were tuned for teacher '{name}' (sha256 {expectedHash}); no teacher of that name " +
                $"could be loaded from the folders searched: {string.Join(", ", folders)}.{passedOver}");
        throw new FileNotFoundException($"The soft prompts in this model were tuned for teacher '{name}' (sha256 {expectedHash}), which does not exist in any folder searched: " +
            $"{string.Join(", ", folders)}. Give its folder with TeacherResolver.SearchIn, {FoldersVariable} or LoadWithTeacherSearch (model.zip references teachers, it never embeds them).",
            name);
    }

    /// <summary>A teacher directory's path without the separators it may end in (a file's path is unchanged).</summary>
    private static string WithoutTrailingSeparators(string path) => path.TrimEnd('/', '\\');

    private sealed class Scope(ImmutableList<string> before) : IDisposable
    {
        private bool _disposed;

        public void Dispose()
        {
            if (_disposed) return;
            _disposed = true;
            Scoped.Value = before;
        }
    }
}
