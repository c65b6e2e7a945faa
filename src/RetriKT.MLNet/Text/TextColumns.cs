using Microsoft.ML;
using Microsoft.ML.Data;

namespace RetriKT.MLNet.Text;

/// <summary>Validation and reading of text columns, with errors that name the column, expected and found type.</summary>
internal static class TextColumns
{
    public static DataViewSchema.Column Require(DataViewSchema schema, string name)
    {
        var column = schema.GetColumnOrNull(name)
            ?? throw new ArgumentOutOfRangeException(nameof(schema),
                $"Input column '{name}' not found. Available columns: {string.Join(", ", schema.Select(c => $"'{c.Name}'"))}.");
        if (column.Type is not TextDataViewType)
            throw new ArgumentOutOfRangeException(nameof(schema), $"Input column '{name}' must be String (text), found {column.Type}.");
        return column;
    }

    public static void Require(SchemaShape schema, string name)
    {
        var column = schema.FirstOrDefault(c => c.Name == name);
        if (column.Name is null)
            throw new ArgumentOutOfRangeException(nameof(schema), $"Input column '{name}' not found.");
        if (column.ItemType is not TextDataViewType || column.Kind != SchemaShape.Column.VectorKind.Scalar)
            throw new ArgumentOutOfRangeException(nameof(schema), $"Input column '{name}' must be a scalar String (text), found {column.Kind} of {column.ItemType}.");
    }

    /// <summary>All values of a text column, in row order.</summary>
    public static IEnumerable<string> Read(IDataView data, DataViewSchema.Column column)
    {
        using var cursor = data.GetRowCursor([column]);
        var getter = cursor.GetGetter<ReadOnlyMemory<char>>(column);
        ReadOnlyMemory<char> value = default;
        while (cursor.MoveNext())
        {
            getter(ref value);
            yield return value.ToString();
        }
    }
}
