using Microsoft.ML;
using Microsoft.ML.Data;

namespace RetriKT.MLNet.Student;

/// <summary>
/// Reads the label column of a training or validation view: a key (as MapValueToKey produces; label names from its
/// KeyValues annotation, or "0".."n-1" without one) or a string (label names = distinct values). Errors name the
/// column, the expected and the found type.
/// </summary>
internal sealed class LabelColumn
{
    private LabelColumn(DataViewSchema.Column column, string[]? keyNames)
    {
        Column = column;
        KeyNames = keyNames;
    }

    public DataViewSchema.Column Column { get; }

    /// <summary>Names of key values 1..n (index 0 = key 1), or null for a string label.</summary>
    public string[]? KeyNames { get; }

    public bool IsKey => KeyNames is not null;

    /// <summary>The column <paramref name="name"/> of <paramref name="schema"/>, checked; <paramref name="data"/> (say "Validation set") names the view in front of every message, null for the main input.</summary>
    public static LabelColumn Require(DataViewSchema schema, string name, string? data = null)
    {
        string In(string message) => data is null ? message : $"{data}: {message}";
        var column = schema.GetColumnOrNull(name)
            ?? throw new ArgumentOutOfRangeException(nameof(schema),
                In($"Label column '{name}' not found. Available columns: {string.Join(", ", schema.Select(c => $"'{c.Name}'"))}."));
        if (column.Type is TextDataViewType) return new LabelColumn(column, null);
        if (column.Type is KeyDataViewType key)
        {
            if (key.Count < 1 || key.Count > 100_000)
                throw new ArgumentOutOfRangeException(nameof(schema), In($"Label column '{name}' is a key with {key.Count} values; expected a known count in [1, 100000]."));
            return new LabelColumn(column, KeyValueNames(column, (int)key.Count));
        }
        throw new ArgumentOutOfRangeException(nameof(schema),
            In($"Label column '{name}' must be a key type (use mlContext.Transforms.Conversion.MapValueToKey(\"{name}\")) or String, found {column.Type}."));
    }

    public static void Require(SchemaShape schema, string name)
    {
        var column = schema.FirstOrDefault(c => c.Name == name);
        if (column.Name is null) throw new ArgumentOutOfRangeException(nameof(schema), $"Label column '{name}' not found.");
        bool ok = column.Kind == SchemaShape.Column.VectorKind.Scalar && (column.IsKey || column.ItemType is TextDataViewType);
        if (!ok)
            throw new ArgumentOutOfRangeException(nameof(schema),
                $"Label column '{name}' must be a scalar key type (MapValueToKey) or String, found {column.Kind} of {column.ItemType}{(column.IsKey ? " (key)" : "")}.");
    }

    /// <summary>A reader giving the label name of the current row, or null when the label is missing (key 0 or empty string).</summary>
    public Func<string?> Reader(DataViewRow row)
    {
        if (KeyNames is null)
        {
            var getText = row.GetGetter<ReadOnlyMemory<char>>(Column);
            ReadOnlyMemory<char> text = default;
            return () =>
            {
                getText(ref text);
                var s = text.ToString().Trim();
                return s.Length == 0 ? null : s;
            };
        }
        var getKey = KeyGetter(row, Column);
        var names = KeyNames;
        return () =>
        {
            ulong key = getKey();
            return key == 0 || key > (ulong)names.Length ? null : names[key - 1];
        };
    }

    private static Func<ulong> KeyGetter(DataViewRow row, DataViewSchema.Column column)
    {
        var raw = column.Type.RawType;
        if (raw == typeof(uint)) { var g = row.GetGetter<uint>(column); uint v = 0; return () => { g(ref v); return v; }; }
        if (raw == typeof(ulong)) { var g = row.GetGetter<ulong>(column); ulong v = 0; return () => { g(ref v); return v; }; }
        if (raw == typeof(ushort)) { var g = row.GetGetter<ushort>(column); ushort v = 0; return () => { g(ref v); return v; }; }
        if (raw == typeof(byte)) { var g = row.GetGetter<byte>(column); byte v = 0; return () => { g(ref v); return v; }; }
        throw new ArgumentOutOfRangeException(nameof(column), $"Label column '{column.Name}' has unsupported key raw type {raw.Name}.");
    }

    /// <summary>
    /// The names a key column's KeyValues annotation gives keys 1..n, as a label column's names are read for training
    /// (text as it is, a bool or a number in invariant form: a key of an int label names its keys "1", "0"), or null when
    /// the column is not a key of known count with key values (the evaluator's view of a label column).
    /// </summary>
    public static string[]? AnnotatedKeyNames(DataViewSchema.Column column)
    {
        if (column.Type is not KeyDataViewType { Count: > 0 and <= 100_000 } key) return null;
        if (column.Annotations.Schema.GetColumnOrNull(AnnotationNames.KeyValues) is not { Type: VectorDataViewType vector }
            || vector.Size != (int)key.Count) return null;
        return ReadKeyValueNames(column, vector.ItemType.RawType, (int)key.Count);
    }

    /// <summary>
    /// The types of key values a label's names are kept in beside String: a bool or number label keyed by MapValueToKey
    /// has key values of its own type, and <c>MapKeyToValue("PredictedLabel")</c> must give that type back (a
    /// PredictionEngine's <c>bool PredictedLabel</c>, as with ML.NET's own trainers), not the names as text.
    /// </summary>
    private static readonly PrimitiveDataViewType[] ValueTypes =
    [
        BooleanDataViewType.Instance, NumberDataViewType.SByte, NumberDataViewType.Byte, NumberDataViewType.Int16, NumberDataViewType.UInt16,
        NumberDataViewType.Int32, NumberDataViewType.UInt32, NumberDataViewType.Int64, NumberDataViewType.UInt64, NumberDataViewType.Single, NumberDataViewType.Double,
    ];

    /// <summary>The type of <paramref name="column"/>'s key values when it is a key whose KeyValues are bool or a number, else null (text).</summary>
    public static PrimitiveDataViewType? KeyValueType(DataViewSchema.Column column)
        => column.Type is KeyDataViewType && column.Annotations.Schema.GetColumnOrNull(AnnotationNames.KeyValues) is { Type: VectorDataViewType vector }
            ? ValueTypes.FirstOrDefault(t => t.Equals(vector.ItemType))
            : null;

    /// <summary>Whether PredictedLabel's key values can take <paramref name="type"/> (bool or a number).</summary>
    public static bool IsKeyValueType(DataViewType type) => ValueTypes.Any(t => t.Equals(type));

    /// <summary>The key-value type named <paramref name="name"/> (its raw type's name, as saved), or null for null (text).</summary>
    public static PrimitiveDataViewType? KeyValueType(string? name, string where)
        => name is null ? null
            : ValueTypes.FirstOrDefault(t => t.RawType.Name == name)
              ?? throw new InvalidDataException($"{where}: label value type '{name}' is not one of String, {string.Join(", ", ValueTypes.Select(t => t.RawType.Name))}.");

    /// <summary>
    /// Adds the KeyValues annotation of a key over <paramref name="names"/>: values of <paramref name="type"/> when every
    /// name reads back as one (the names were written from such values), else the names as text.
    /// </summary>
    public static void AddKeyValues(DataViewSchema.Annotations.Builder builder, IReadOnlyList<string> names, PrimitiveDataViewType? type)
    {
        var values = type is null ? null : names.Select(n => Parse(n, type.RawType)).ToArray();
        if (values is null || values.Any(v => v is null))
        {
            var text = names.Select(n => n.AsMemory()).ToArray();
            builder.Add(AnnotationNames.KeyValues, new VectorDataViewType(TextDataViewType.Instance, text.Length),
                (ref VBuffer<ReadOnlyMemory<char>> dst) => dst = new VBuffer<ReadOnlyMemory<char>>(text.Length, (ReadOnlyMemory<char>[])text.Clone()));
            return;
        }
        typeof(LabelColumn).GetMethod(nameof(AddTypedKeyValues), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!
            .MakeGenericMethod(type!.RawType).Invoke(null, [builder, type, values]);

        static object? Parse(string name, Type raw)
        {
            try
            {
                var value = Convert.ChangeType(name, raw, System.Globalization.CultureInfo.InvariantCulture);
                return Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture) == name ? value : null;
            }
            catch (Exception e) when (e is FormatException or OverflowException) { return null; }
        }
    }

    private static void AddTypedKeyValues<T>(DataViewSchema.Annotations.Builder builder, PrimitiveDataViewType type, object[] values)
    {
        var typed = values.Cast<T>().ToArray();
        builder.Add(AnnotationNames.KeyValues, new VectorDataViewType(type, typed.Length),
            (ref VBuffer<T> dst) => dst = new VBuffer<T>(typed.Length, (T[])typed.Clone()));
    }

    private static string[] KeyValueNames(DataViewSchema.Column column, int count)
    {
        var annotation = column.Annotations.Schema.GetColumnOrNull(AnnotationNames.KeyValues);
        if (annotation is not { Type: VectorDataViewType vector } || vector.Size != count)
            return Enumerable.Range(0, count).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray();
        var names = ReadKeyValueNames(column, vector.ItemType.RawType, count);
        var duplicate = names.GroupBy(n => n, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1 || g.Key.Length == 0);
        if (duplicate is not null)
            throw new ArgumentOutOfRangeException(nameof(column), $"Label column '{column.Name}': key value '{duplicate.Key}' is empty or repeated; label names must be distinct.");
        return names;
    }

    /// <summary>The first <paramref name="count"/> KeyValues of <paramref name="column"/>, of raw type <paramref name="raw"/>, in invariant text form.</summary>
    private static string[] ReadKeyValueNames(DataViewSchema.Column column, Type raw, int count)
        => (string[])typeof(LabelColumn).GetMethod(nameof(ReadKeyValues), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!
            .MakeGenericMethod(raw).Invoke(null, [column, count])!;

    private static string[] ReadKeyValues<T>(DataViewSchema.Column column, int count)
    {
        VBuffer<T> values = default;
        column.Annotations.GetValue(AnnotationNames.KeyValues, ref values);
        return values.DenseValues().Select(v => Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture) ?? "").Take(count).ToArray();
    }
}

/// <summary>Annotation names ML.NET evaluators and converters read (the strings of ML.NET's internal AnnotationUtils.Kinds).</summary>
internal static class AnnotationNames
{
    public const string KeyValues = "KeyValues";
    public const string SlotNames = "SlotNames";
    public const string ScoreColumnKind = "ScoreColumnKind";
    public const string ScoreValueKind = "ScoreValueKind";
    public const string ScoreColumnSetId = "ScoreColumnSetId";
    public const string TrainingLabelValues = "TrainingLabelValues";
}
